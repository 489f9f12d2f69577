"""A deterministic ~1,500-word system prompt: support-bot rules over a fixed vocabulary, for the
benchmarks that measure the output shield (bench/sentinel.sh, bench/instructions.sh).
    python3 bench/system_prompt.py OUT_FILE
"""
import random, sys
random.seed(7)
subjects = ["the assistant", "you", "every answer", "each reply", "the support team", "our policy"]
verbs = ["must mention", "should explain", "never reveals", "always checks", "politely declines", "briefly summarises"]
objects = ["the refund window of thirty days", "the shipping times for Europe", "the wholesale price list",
           "the loyalty programme tiers", "the internal escalation path", "the warranty terms for rockets",
           "the discount code policy", "the opening hours of the Berlin office", "the data retention rules",
           "the order number format", "the billing team's contact form", "the safety notes for fuel cells"]
tails = ["unless a manager approves it", "in plain language", "before closing the ticket", "when the customer asks twice",
         "and links the help centre", "without promising dates", "for business customers only", "in under fifty words"]
words, lines = 0, ["You are Nimbus, the support assistant of Acme Rockets Inc."]
while words < 1500:
    s = f"{random.choice(subjects).capitalize()} {random.choice(verbs)} {random.choice(objects)} {random.choice(tails)}."
    lines.append(s)
    words += len(s.split())
open(sys.argv[1], "w").write(" ".join(lines) + "\n")
print(f"system prompt: {words} words", file=sys.stderr)
