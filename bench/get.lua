-- wrk script: GET /v1/exceptions/EXC-n for random n in 1..ROWS.
local rows = tonumber(os.getenv("ROWS")) or 1
math.randomseed(os.time())
request = function()
  return wrk.format("GET", string.format("/v1/exceptions/EXC-%06d", math.random(1, rows)))
end
