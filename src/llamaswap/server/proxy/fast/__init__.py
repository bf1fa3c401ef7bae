"""The fast path: plain model requests served on uvloop protocols without aiohttp.

One listening socket. Each connection starts with `protocol.FrontProtocol`, which reads
request heads with httptools (`head`). A plain model request (`plan` says which) is served
here (`relay`): lease, forward on the pooled upstream client, relay the bytes as they arrive,
record, release. Anything else — and everything after it on that connection — is handed to
aiohttp's own connection handler with the bytes it has not consumed, so it is answered by
the application exactly as without the fast path. `site.FastSite` listens; it is used when
`LLAMASWAP_FAST_PATH` (or `--fast-path`) turns it on.
"""
