"""Sans-IO protocol: the JSON encoding, SSE message framing, subscription options and the
subscription POST's body; nothing here touches a socket, a thread or the app."""
