"""Chat completions on a Claude model through an OMI gateway with the official `openai` Python SDK
(the gateway translates them to Anthropic's Messages API); prints one JSON report.

Usage: python openai_chat_claude.py BASE_URL API_KEY   (BASE_URL ends in /v1)

No `mock` steering here: the translation refuses fields that Claude has no use for, so the mock
upstream's usage is its own count (prompt characters / 4, one completion token per chunk).
"""
import json
import sys

import openai
from openai import OpenAI

base_url, api_key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
report = {"sdk_version": openai.__version__}
MODEL = "claude-sonnet-4-5"
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hello in three words"},
]


def usage_of(usage):
    return [usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens, usage.completion_tokens]


completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=64)
report["content"] = completion.choices[0].message.content
report["finish_reason"] = completion.choices[0].finish_reason
report["model"] = completion.model
report["usage"] = usage_of(completion.usage)


def stream(**options):
    """The streamed text, its finish reason, and every usage the stream carried."""
    pieces, finish, usages = [], None, []
    chunks = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=64, stream=True, **options)
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            usages.append(usage_of(chunk.usage))
    return {"text": "".join(pieces), "finish_reason": finish, "usages": usages}


report["streamed"] = stream()
report["streamed_with_usage"] = stream(stream_options={"include_usage": True})

# A streamed tool call: `tool_choice` names the function, so Claude must call it.
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
calls, finish = {}, None
chunks = client.chat.completions.create(
    model=MODEL, messages=MESSAGES, max_tokens=64, stream=True, tools=[WEATHER],
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
)
for chunk in chunks:
    for choice in chunk.choices:
        for call in choice.delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
            entry["id"] = call.id or entry["id"]
            if call.function and call.function.name:
                entry["name"] = call.function.name
            if call.function and call.function.arguments:
                entry["arguments"] += call.function.arguments
        finish = choice.finish_reason or finish
report["streamed_tool_call"] = {
    "calls": [{"name": c["name"], "arguments": json.loads(c["arguments"] or "{}"), "has_id": bool(c["id"])}
              for _, c in sorted(calls.items())],
    "finish_reason": finish,
}

print(json.dumps(report))
