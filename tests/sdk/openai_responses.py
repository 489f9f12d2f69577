"""The Responses API through an OMI gateway with the official `openai` Python SDK; prints one JSON report.

Usage: python openai_responses.py BASE_URL API_KEY   (BASE_URL ends in /v1)

The `mock` field steers the mock upstream's usage (cached and reasoning tokens), so that the
report and the booked usage can be checked to the token.
"""
import json
import sys

import openai
from openai import OpenAI

base_url, api_key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
report = {"sdk_version": openai.__version__}
MODEL = "gpt-4o-mini"


def usage_of(usage):
    return {
        "input": usage.input_tokens,
        "cached": usage.input_tokens_details.cached_tokens,
        "output": usage.output_tokens,
        "reasoning": usage.output_tokens_details.reasoning_tokens,
        "total": usage.total_tokens,
    }


response = client.responses.create(
    model=MODEL,
    instructions="Be brief.",
    input="Say hello in three words",
    extra_body={"mock": {"cache_read_tokens": 4, "reasoning_tokens": 2, "completion_tokens": 7}},
)
report["output_text"] = response.output_text
report["status"] = response.status
report["usage"] = usage_of(response.usage)

event_types, deltas, completed = [], [], None
for event in client.responses.create(
    model=MODEL,
    input=[{"role": "user", "content": [{"type": "input_text", "text": "Say hello in three words"}]}],
    stream=True,
    extra_body={"mock": {"cache_read_tokens": 3, "reasoning_tokens": 1}},
):
    event_types.append(event.type)
    if event.type == "response.output_text.delta":
        deltas.append(event.delta)
    elif event.type == "response.completed":
        completed = event.response
report["streamed"] = {
    "deltas": deltas,
    "event_types": event_types,
    "output_text": completed.output_text if completed else None,
    "usage": usage_of(completed.usage) if completed else None,
}

print(json.dumps(report))
