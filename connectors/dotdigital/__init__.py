"""DotDigital: the client the engine calls, and a local sandbox imitating the real API.

- `client`: `DotDigitalClient`, one method per call (contacts, lists, data fields, insight,
  suppressions, programs); `imports`: its bulk imports and their slots.
- `transport`: how every call is sent (rate budget, HTTP, typed error, wait or rediscover).
- `errors`, `types`, `parse`: what a call raises, what it takes and returns, and how answers
  are read into those types.
- `sandbox`: a real HTTP server imitating DotDigital, for the tests and the demo.
"""
