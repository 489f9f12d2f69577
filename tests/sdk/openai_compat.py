"""Drives an OMI gateway with the official `openai` Python SDK; prints one JSON report.

Usage: python openai_compat.py BASE_URL API_KEY
"""
import json
import sys

import openai
from openai import OpenAI

base_url, api_key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
report = {"sdk_version": openai.__version__}

report["models"] = [m.id for m in client.models.list()]

completion = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello in three words"}]
)
report["content"] = completion.choices[0].message.content
report["usage"] = [completion.usage.prompt_tokens, completion.usage.completion_tokens]

pieces = []
for chunk in client.chat.completions.create(
    model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "Say hello in three words"}]
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
report["streamed"] = "".join(pieces)

usage_chunks = 0
for chunk in client.chat.completions.create(
    model="gpt-4o-mini",
    stream=True,
    stream_options={"include_usage": True},
    messages=[{"role": "user", "content": "Say hello in three words"}],
):
    if chunk.usage is not None:
        usage_chunks += 1
        report["stream_usage"] = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens]
report["usage_chunks"] = usage_chunks

try:
    OpenAI(base_url=base_url, api_key="omi_wrong", max_retries=0).models.list()
    report["auth_error"] = None
except openai.AuthenticationError as e:
    report["auth_error"] = [e.status_code, e.code]

print(json.dumps(report))
