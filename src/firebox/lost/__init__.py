"""LoST, the Location-to-Service Translation protocol (RFC 5222): messages, codec, client."""
