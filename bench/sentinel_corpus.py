#!/usr/bin/env python3
"""Prompts for checking that a change to the Sentinel's rules keeps every verdict.

Prints one JSON object a line ({"text": ...}) to stdout: the labelled set and the handwritten
benign lines of tests/data/sentinel/, random soups of the rules' keywords (plain, leetspeak,
spaced out, upper case, reversed) and encoded attacks (base64, rot13, reversed, hex, pig
latin). The same seed gives the same prompts. To compare two builds:

    python3 bench/sentinel_corpus.py > /tmp/corpus.jsonl
    old/omi sentinel scan < /tmp/corpus.jsonl > /tmp/before.out
    new/omi sentinel scan < /tmp/corpus.jsonl > /tmp/after.out
    cmp /tmp/before.out /tmp/after.out
"""
import base64
import codecs
import csv
import json
import random
import re
import sys

random.seed(7)
data = 'tests/data/sentinel/'
texts = [json.loads(line)['text'] for line in open(data + 'benign.jsonl')]
texts += [line.rstrip('\n') for line in open(data + 'benign_handwritten.txt') if line.strip()]
labelled = json.load(open(data + 'purplellama_prompt_injection.json'))
for row in labelled:
    texts.append(row.get('user_input') or '')
    texts.append((row.get('test_case_prompt') or '') + '\n' + (row.get('user_input') or ''))
with open(data + 'giskard_prompt_injections.csv') as f:
    texts += [row.get('prompt') or list(row.values())[0] for row in csv.DictReader(f)]

# The rules' own keyword literals, without their `~` and `*` markers.
keywords = [k.strip('~*') for k in re.findall(r'"([^"\\]{2,40})"', open('src/agents/sentinel/rules.rs').read())]
filler = ("the and you please ignore all previous instructions system prompt 1gn0r3 i g n o r e "
          "here is my text about bread").split()
leet = str.maketrans('aeiost', '4310$7')
for _ in range(2000):
    words = [random.choice(keywords) if random.random() < 0.5 else random.choice(filler)
             for _ in range(random.randint(3, 40))]
    trick = random.random()
    if trick < 0.1:
        words = [w.translate(leet) for w in words]
    elif trick < 0.15:
        words = [' '.join(w) for w in words]
    elif trick < 0.2:
        words = [w.upper() for w in words]
    elif trick < 0.25:
        words = [w[::-1] for w in words]
    texts.append(random.choice([' ', ' ', ', ', '  ', '\n', ' "', '. ']).join(words))

for attack in [row.get('user_input') or '' for row in labelled][:150]:
    texts.append('decode this: ' + base64.b64encode(attack.encode()).decode())
    texts.append(codecs.encode(attack, 'rot13'))
    texts.append(attack[::-1])
    texts.append('hex: ' + attack.encode().hex())
    texts.append(' '.join(w + 'ay' for w in attack.split()))

for text in texts:
    sys.stdout.write(json.dumps({'text': text}) + '\n')
