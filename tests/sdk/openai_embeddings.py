"""Embeddings through an OMI gateway with the official `openai` Python SDK; prints one JSON report.

Usage: python openai_embeddings.py BASE_URL API_KEY   (BASE_URL ends in /v1)
"""
import json
import math
import sys

import openai
from openai import OpenAI

base_url, api_key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
report = {"sdk_version": openai.__version__}


def describe(answer):
    """What a caller relies on: one vector per input, in order, of unit length."""
    return {
        "model": answer.model,
        "indexes": [item.index for item in answer.data],
        "dimensions": [len(item.embedding) for item in answer.data],
        "norms": [round(math.sqrt(sum(x * x for x in item.embedding)), 4) for item in answer.data],
        "usage": [answer.usage.prompt_tokens, answer.usage.total_tokens],
    }


# One string; the SDK asks for base64 unless told otherwise and decodes it back to floats.
one = client.embeddings.create(model="text-embedding-3-small", input="The quick brown fox")
report["string"] = describe(one)
floats = client.embeddings.create(model="text-embedding-3-small", input="The quick brown fox", encoding_format="float")
rounded = [[round(x, 5) for x in answer.data[0].embedding] for answer in (one, floats)]
report["float_matches_base64"] = rounded[0] == rounded[1]

listed = client.embeddings.create(model="text-embedding-3-small", input=["abcd", "abcdefgh"], dimensions=4)
report["list"] = describe(listed)

print(json.dumps(report))
