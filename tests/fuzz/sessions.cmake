# Routed sessions between replicas (api/services/session_route.h): the frames a peer sends and
# the messages in them.
gantry_fuzzer(session_route gantry_services)
