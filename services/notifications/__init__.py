"""The notifications service: one notification per terminal order, listed or streamed (SSE)."""
