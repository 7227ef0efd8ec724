"""The web dashboard: server-rendered pages over the core services (no gRPC in between), with
inline SVG graphs from the coordinator's recorded history. No login: loopback by default."""
