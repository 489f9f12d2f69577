-- wrk script for bench/sentinel.sh: a typical prompt (about 60 words) and a steered answer of
-- about 120 words, streamed in 40 chunks when STREAM=1. Key from $OMI_BENCH_KEY.
local prompt = "I run a small online bakery and I am writing the FAQ page for our website. " ..
  "Customers keep asking about delivery areas, allergens and how long bread stays fresh. " ..
  "Could you draft five short questions and answers in a friendly tone, and suggest one " ..
  "sentence about our gluten-free range? Please keep each answer under forty words."
local answer = "Here is a draft for your FAQ page. Where do you deliver? We deliver within ten " ..
  "kilometres of the shop, Tuesday to Saturday, and orders placed before noon arrive the same day. " ..
  "Do your products contain allergens? Most of our bakes contain wheat, milk and eggs, and some " ..
  "contain nuts; every label lists them. How long does bread stay fresh? Sourdough keeps three " ..
  "days in a paper bag and freezes well for a month. Can I order a custom cake? Yes, with five " ..
  "days notice. Do you have gluten-free options? Our gluten-free range is baked on separate days " ..
  "with separate tools, so you can enjoy it with confidence."
local stream = os.getenv("STREAM") == "1"
wrk.method = "POST"
wrk.body = string.format(
  '{"model":"gpt-4o-mini","stream":%s,"messages":[{"role":"user","content":"%s"}],"mock":{"content":"%s","chunks":40}}',
  stream and "true" or "false", prompt, answer)
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("OMI_BENCH_KEY")
