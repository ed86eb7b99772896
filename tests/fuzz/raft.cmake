# Harnesses for raft/: the Raft log segments raftlog.h reads from a node's directory.
gantry_fuzzer(raftlog gantry_raft)
