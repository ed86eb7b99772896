# The forwarding protocol between replicas (api/forward/): frames and the messages in them, and the
# forwarded principal's role names and scopes as the gate reads them.
gantry_fuzzer(forward gantry_forward gantry_authz)
