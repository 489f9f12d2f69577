"""Anthropic's Messages API through an OMI gateway with the official `anthropic` Python SDK;
prints one JSON report.

Usage: python anthropic_messages.py BASE_URL API_KEY   (BASE_URL is the gateway's root: the SDK
appends /v1/messages)

The SDK sends `api_key` as a bearer token; one request sends it as `x-api-key` instead, as older
SDKs and Anthropic's curl examples do. The `mock` field steers the mock upstream's cache usage and
tool call, so that the report and the booked usage can be checked to the token.
"""
import json
import sys

import anthropic
from anthropic import Anthropic

base_url, api_key = sys.argv[1], sys.argv[2]
client = Anthropic(base_url=base_url, api_key=api_key, max_retries=0)
report = {"sdk_version": anthropic.__version__}
MODEL = "claude-sonnet-4-5"
HELLO = [{"role": "user", "content": "Say hello in three words"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL_WEATHER = {"tool_call": {"name": "get_weather", "input": {"city": "Paris"}}}


def usage_of(usage):
    return {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cache_creation": usage.cache_creation_input_tokens,
        "cache_read": usage.cache_read_input_tokens,
    }


def text_of(message):
    return "".join(block.text for block in message.content if block.type == "text")


message = client.messages.create(
    model=MODEL,
    max_tokens=64,
    system="Be brief.",
    messages=HELLO,
    extra_body={"mock": {"cache_creation_tokens": 7, "cache_read_tokens": 5}},
)
report["text"] = text_of(message)
report["stop_reason"] = message.stop_reason
report["usage"] = usage_of(message.usage)

with client.messages.stream(
    model=MODEL, max_tokens=64, messages=HELLO, extra_body={"mock": {"cache_read_tokens": 6}}
) as stream:
    pieces = list(stream.text_stream)
    final = stream.get_final_message()
report["streamed"] = {
    "pieces": pieces,
    "text": text_of(final),
    "stop_reason": final.stop_reason,
    "usage": usage_of(final.usage),
}

# stream=True hands over the raw events; the tool's input arrives as JSON in parts.
event_types, partial_json, tool_name, stop_reason = [], [], None, None
events = client.messages.create(
    model=MODEL, max_tokens=64, messages=HELLO, tools=[WEATHER], stream=True, extra_body={"mock": CALL_WEATHER}
)
for event in events:
    event_types.append(event.type)
    if event.type == "content_block_start" and event.content_block.type == "tool_use":
        tool_name = event.content_block.name
    elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
        partial_json.append(event.delta.partial_json)
    elif event.type == "message_delta":
        stop_reason = event.delta.stop_reason
report["streamed_tool_call"] = {
    "event_types": event_types,
    "tool": tool_name,
    "input": json.loads("".join(partial_json)),
    "stop_reason": stop_reason,
}

# A tool-use round trip: the model calls the tool, its result goes back, the model answers.
asked = [{"role": "user", "content": "What is the weather in Paris?"}]
call = client.messages.create(
    model=MODEL, max_tokens=64, messages=asked, tools=[WEATHER], extra_body={"mock": CALL_WEATHER}
)
tool_use = next(block for block in call.content if block.type == "tool_use")
called = {"type": "tool_use", "id": tool_use.id, "name": tool_use.name, "input": tool_use.input}
result = {"type": "tool_result", "tool_use_id": tool_use.id, "content": "18 degrees, sunny"}
answer = client.messages.create(
    model=MODEL,
    max_tokens=64,
    tools=[WEATHER],
    messages=asked + [{"role": "assistant", "content": [called]}, {"role": "user", "content": [result]}],
    extra_body={"mock": {"content": "It is 18 degrees and sunny in Paris."}},
)
report["tool_round_trip"] = {
    "call": {
        "stop_reason": call.stop_reason,
        "tool": tool_use.name,
        "input": tool_use.input,
        "usage": usage_of(call.usage),
    },
    "answer": {"stop_reason": answer.stop_reason, "text": text_of(answer), "usage": usage_of(answer.usage)},
}

# The key as `x-api-key`, as older SDKs and curl send it.
by_header = Anthropic(base_url=base_url, api_key=None, default_headers={"x-api-key": api_key}, max_retries=0)
report["x_api_key_text"] = text_of(by_header.messages.create(model=MODEL, max_tokens=64, messages=HELLO))

try:
    Anthropic(base_url=base_url, api_key="omi_wrong", max_retries=0).messages.create(
        model=MODEL, max_tokens=64, messages=HELLO
    )
    report["auth_error"] = None
except anthropic.AuthenticationError as e:
    report["auth_error"] = e.status_code

print(json.dumps(report))
