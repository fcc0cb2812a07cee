-- wrk script for POST /v1/events: every request carries EVENTS new events
-- (unique event_ids per thread and request, so none is a resend).
local events = tonumber(os.getenv("EVENTS") or "100")
local counter = 0
local thread_id = 0
local ts = os.time() * 1000

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function request()
  counter = counter + 1
  local lines = {}
  for i = 1, events do
    lines[i] = string.format('{"event_id":"wrk-%s-%d-%d","type":"impression","ts":%d,"ad_id":"ad-%d","country":"US","ad_format":"banner","device":"web","price_micros":1500}',
      tid, counter, i, ts, i % 500)
  end
  return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/x-ndjson"}, table.concat(lines, "\n"))
end
