-- wrk script: POST /v1/coverage:batch with 100 random assets of the 10,000 `leeway seed`
-- spreads exceptions over.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(os.time())
request = function()
  local items = {}
  for i = 1, 100 do
    items[i] = string.format('{"asset":"asset-%05d"}', math.random(1, 10000))
  end
  return wrk.format(nil, "/v1/coverage:batch", nil, '{"items":[' .. table.concat(items, ",") .. ']}')
end
