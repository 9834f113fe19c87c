"""Transports move opaque bytes between parties. Only ``grpc_*`` modules may import grpc."""
