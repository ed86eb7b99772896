# The egress relay's parsers of sandbox bytes (egress/parse.h): one harness per parser.
gantry_fuzzer(egress_connect gantry_egress_parse)
gantry_fuzzer(egress_http gantry_egress_parse)
gantry_fuzzer(egress_tls gantry_egress_parse)
gantry_fuzzer(egress_dns gantry_egress_parse)
gantry_fuzzer(egress_dns_tcp gantry_egress_parse)
