-- wrk script: POST a small chat completion (the body is BENCH_BODY when set).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY")
  or '{"model": "m1", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}'
