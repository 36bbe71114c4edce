-- wrk script: GET /v1/coverage?asset=asset-n for a random asset of the 10,000 `leeway seed`
-- spreads exceptions over.
math.randomseed(os.time())
request = function()
  return wrk.format("GET", string.format("/v1/coverage?asset=asset-%05d", math.random(1, 10000)))
end
