# Harnesses for raft/: the Raft log segments raftlog.h reads from a node's directory.
gantry_fuzzer(raftlog gantry_raft)
# The bytes of a certificate renewal between replicas (certrenew_wire.h).
gantry_fuzzer(certrenew_wire gantry_raft)
