/* The project's one translation of OpenSSL's error codes, for every room (raft's PKI and peer TLS,
 * the gRPC transport and client, API credential checks). It lives in lib/ so that no room has
 * to depend on another one to reach it; it is the gantry_lib_ssl library, the only part of lib/
 * that links OpenSSL. */
#ifndef GANTRY_LIB_SSLERR_H
#define GANTRY_LIB_SSLERR_H

/* Drains OpenSSL's thread-local error queue: "@what: <first reason>" into @errmsg; returns
 * GERR_NOMEM for an allocation failure, GERR_INVAL when the reason points at the input (bad PEM,
 * ASN.1, X.509), GERR_INTERNAL otherwise. server/grpc/tls.c adds the mapping of SSL_get_error's
 * result on top of it. */
int sslerr_from_openssl(char *errmsg, const char *what);

#endif
