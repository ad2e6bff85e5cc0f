/*
 * config_warn.c: settings that are valid but leave the daemon open, said
 * out loud at -t and at start-up (never a reason to refuse: a firewall or
 * a private network may be the protection, which the daemon cannot see).
 *
 *   - a TCP listener on a non-loopback address with no client
 *     authentication (listen.shared_key empty and no client certificates
 *     required): anyone who can reach it can write to the ledger, in plain
 *     text when TLS is off too;
 *   - an http.listen address that is not loopback with no http.tokens_file
 *     and no client certificates required;
 *   - admin.http on a non-loopback address: it has no authentication;
 *   - listen.tls.key, http.tls.key or http.tokens_file readable by its
 *     group or by others.
 *
 * An address counts as loopback only when every address its host resolves
 * to is 127.0.0.0/8 or ::1; 0.0.0.0 and [::] listen on every interface.
 */
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "config.h"
#include "log.h"

/* True when SA is 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104. */
static bool config_warn_sa_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

/*
 * True when "host:port" (or "[v6]:port") ADDR listens beyond this machine:
 * some address of its host is not loopback. A host that does not resolve
 * says nothing (the listener reports it at start).
 */
static bool config_warn_exposed(const char *addr)
{
	const char *colon = strrchr(addr, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *res = NULL;
	char host[300];
	bool exposed = false;
	size_t n;

	if (!colon)
		return false;
	n = (size_t)(colon - addr);
	if (addr[0] == '[' && n >= 2 && addr[n - 1] == ']')
		snprintf(host, sizeof(host), "%.*s", (int)(n - 2), addr + 1);
	else
		snprintf(host, sizeof(host), "%.*s", (int)n, addr);
	if (getaddrinfo(host, NULL, &hints, &res) != 0)
		return false;
	for (const struct addrinfo *ai = res; ai && !exposed; ai = ai->ai_next)
		exposed = !config_warn_sa_loopback(ai->ai_addr);
	freeaddrinfo(res);
	return exposed;
}

/* Warn for each of the N addresses ADDRS of KEY that other machines can
 * reach: it LACKS what would authenticate clients, FIX says what to set. */
static int config_warn_open(const char *key, char *const *addrs, int n, const char *lacks,
			    const char *fix)
{
	int warned = 0;

	for (int i = 0; i < n; i++) {
		if (!config_warn_exposed(addrs[i]))
			continue;
		log_warn("config", "%s %s is reachable from other machines and %s: anyone who can "
			 "connect can write events; %s, or listen on 127.0.0.1", key, addrs[i],
			 lacks, fix);
		warned++;
	}
	return warned;
}

static int config_warn_listeners(const struct config *cfg)
{
	bool tls = cfg->listen_tls_cert[0] != '\0';

	if (cfg->listen_shared_key[0] || (tls && cfg->listen_tls_ca[0]))
		return 0;
	return config_warn_open("listen.tcp", cfg->listen_tcp, cfg->listen_tcp_count,
				tls ? "asks for no authentication (TLS without listen.shared_key or "
				"listen.tls.ca)" : "has no listen.shared_key and no TLS",
				"set listen.shared_key (or listen.tls.ca for client certificates)");
}

static int config_warn_http(const struct config *cfg)
{
	bool tls = cfg->http_tls_cert[0] != '\0';

	if (cfg->http_tokens_file[0] || (tls && cfg->http_tls_ca[0]))
		return 0;
	return config_warn_open("http.listen", cfg->http_listen, cfg->http_listen_count,
				tls ? "has no http.tokens_file" : "has no http.tokens_file and no TLS",
				"set http.tokens_file");
}

/* Warn when the secret file at PATH (KEY names it) may be read by its
 * group or others. */
static int config_warn_key_mode(const char *key, const char *path)
{
	struct stat st;

	if (!path[0] || stat(path, &st) < 0) /* a missing key is reported at start */
		return 0;
	if (!(st.st_mode & (S_IRGRP | S_IROTH)))
		return 0;
	log_warn("config", "%s %s has mode %04o: readable by %s; "
		 "chmod 600 it (or 640 with a group only the daemon is in)", key, path,
		 (unsigned)(st.st_mode & 07777),
		 st.st_mode & S_IROTH ? "every user" : "its group");
	return 1;
}

int config_warn_exposure(const struct config *cfg)
{
	int n = config_warn_listeners(cfg);

	if (cfg->admin_http[0] && config_warn_exposed(cfg->admin_http)) {
		log_warn("config", "admin.http %s is reachable from other machines and has no "
			 "authentication: anyone who can connect can read /metrics and /stats; "
			 "listen on 127.0.0.1 or firewall it", cfg->admin_http);
		n++;
	}
	n += config_warn_http(cfg);
	n += config_warn_key_mode("http.tls.key", cfg->http_tls_key);
	n += config_warn_key_mode("http.tokens_file", cfg->http_tokens_file);
	return n + config_warn_key_mode("listen.tls.key", cfg->listen_tls_key);
}
