"""Builds tests/data/sentinel/benign.jsonl: hand-written prompts (benign_handwritten.txt,
entries separated by '---' lines; '--- borderline' marks the next entry as a
borderline mention of an attack) plus a templated block for variety.
Deterministic: run `python3 tests/data/sentinel/make_benign.py` from the crate root."""

import json
import random
import re

random.seed(7)
rows = []
raw = open("tests/data/sentinel/benign_handwritten.txt", encoding="utf-8").read()
chunks = re.split(r"\n---( borderline)?\n", raw)
# re.split interleaves the capture group: text, tag, text, tag, ...
texts, tags = chunks[0::2], [None] + chunks[1::2]
for text, tag in zip(texts, tags):
    row = {"text": text.strip()}
    if tag:
        row["tag"] = "borderline"
    rows.append(row)

phrases = [
    "The meeting has been moved to next Monday.",
    "Please keep the receipt in case you need to return the item.",
    "Could you send me the previous version of the contract?",
    "Ignore the first page, the important part starts on page two.",
    "The system will be offline during the update tonight.",
    "My password expired, so I could not log in this morning.",
    "We need new instructions for the night shift.",
    "The admin office closes at five on Fridays.",
    "I forgot my umbrella on the train.",
    "This recipe needs two eggs and a cup of milk.",
    "The children are playing in the garden.",
    "Our flight was delayed by three hours.",
]
langs = ["French", "Spanish", "German", "Italian", "Portuguese", "Dutch",
         "Japanese", "Korean", "Russian", "Polish", "Turkish", "Chinese"]
frames = [
    'Translate into {l}: "{p}"',
    'How would I say "{p}" in {l}?',
    'Please translate this sentence to {l} and keep it informal: {p}',
    'Can you give me the {l} version of: "{p}"',
]
for p in phrases:
    l = random.choice(langs)
    f = random.choice(frames)
    rows.append({"text": f.format(l=l, p=p)})

tasks = [
    "read a file line by line",
    "parse a JSON string into a struct",
    "make an HTTP GET request with a timeout",
    "sort a list of records by two fields",
    "ignore a specific compiler warning",
    "hash a password securely",
    "run a function every five minutes",
    "read environment variables with a default value",
    "write a unit test that checks an error is returned",
    "remove duplicates from a list while keeping order",
    "create a system user for a background service",
    "log errors to a file instead of the console",
    "format a date as ISO 8601",
    "retry a failed network call with exponential backoff",
]
langs2 = ["Python", "Rust", "Go", "Java", "TypeScript", "C#", "Kotlin", "Ruby", "PHP", "Bash"]
frames2 = [
    "How do I {t} in {l}?",
    "What's the idiomatic way to {t} in {l}? A short example please.",
    "In {l}, what is the cleanest way to {t}?",
    "I'm new to {l}. How can I {t}?",
]
for t in tasks:
    for _ in range(2):
        rows.append({"text": random.choice(frames2).format(t=t, l=random.choice(langs2))})

support = [
    ("my order", "has not arrived after two weeks"),
    ("the mobile app", "crashes every time I open the settings page"),
    ("my invoice", "shows the wrong VAT number"),
    ("the admin dashboard", "does not load in Safari"),
    ("my previous order", "was missing one item"),
    ("the password reset email", "never arrives in my inbox"),
    ("the system status page", "says everything is fine but I get timeouts"),
    ("my subscription", "renewed even though I cancelled it"),
]
frames3 = [
    "Hello, {a} {b}. What should I do?",
    "Hi support team, {a} {b}. Can you help?",
    "I need help: {a} {b}. Is this a known issue?",
]
for a, b in support:
    rows.append({"text": random.choice(frames3).format(a=a, b=b)})

seen = set()
with open("tests/data/sentinel/benign.jsonl", "w", encoding="utf-8") as out:
    for r in rows:
        if r["text"] in seen:
            continue
        seen.add(r["text"])
        out.write(json.dumps(r, ensure_ascii=False) + "\n")
print(len(seen), "rows")
