"""Everything that speaks NATS bytes: the client and its connections, JetStream and $SYS requests,
the KV and Object Store wire formats, snapshot streaming and S2. No pydantic models, no registry."""
