"""The data plane: a model request in, the upstream's answer streamed out (serving,
forwarding, the lean upstream client, websockets, the loading stream, recording)."""
