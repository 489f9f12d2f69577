"""Legacy completions through an OMI gateway with the official `openai` Python SDK; prints one JSON report.

Usage: python openai_completions.py BASE_URL API_KEY   (BASE_URL ends in /v1)
"""
import json
import sys

import openai
from openai import OpenAI

base_url, api_key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
report = {"sdk_version": openai.__version__}
MODEL = "gpt-3.5-turbo-instruct"
PROMPT = "Say hello in three words"

completion = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16)
report["text"] = completion.choices[0].text
report["finish_reason"] = completion.choices[0].finish_reason
report["usage"] = [completion.usage.prompt_tokens, completion.usage.completion_tokens]


def stream(**options):
    """The streamed text, its finish reason, and every usage the stream carried."""
    pieces, finish, usages = [], None, []
    for chunk in client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, stream=True, **options):
        for choice in chunk.choices:
            pieces.append(choice.text)
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            usages.append([chunk.usage.prompt_tokens, chunk.usage.completion_tokens])
    return {"text": "".join(pieces), "finish_reason": finish, "usages": usages}


# Without include_usage the client sees no usage (whatever the gateway asks upstream to meter it).
report["streamed"] = stream()
report["streamed_with_usage"] = stream(stream_options={"include_usage": True})

print(json.dumps(report))
