/* tls.c - TLS 1.3 contexts for the peer link: the fleet CA checks the chain, and an allow-list of
 * subjectAltName identities, enforced in OpenSSL's verify callback, decides who may talk to us. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "cleanup.h"
#include "tls.h"

/* The context's private copy of the allow-list, hung on the SSL_CTX as ex_data so that the
 * verify callback (which only sees the X509_STORE_CTX -> SSL -> SSL_CTX) can reach it, and so
 * that it is freed with the context. */
struct allow_list {
	size_t n_names;
	char *names[];
};

static int allow_list_index = -1;
static pthread_once_t allow_list_once = PTHREAD_ONCE_INIT;

static void allow_list_free(struct allow_list *list)
{
	if (!list)
		return;
	for (size_t i = 0; i < list->n_names; i++)
		free(list->names[i]);
	free(list);
}

/* CRYPTO_EX_free: called by SSL_CTX_free for every context (ptr is NULL where never set). */
static void allow_list_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			       void *argp)
{
	allow_list_free(ptr);
}

static void allow_list_index_init(void)
{
	allow_list_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, allow_list_ex_free);
}

static const struct allow_list *ctx_allow_list(const SSL_CTX *ctx)
{
	if (allow_list_index < 0)
		return NULL;
	return SSL_CTX_get_ex_data(ctx, allow_list_index);
}

/* A SAN we accept as an identity: a dNSName or a URI (e.g. spiffe://fleet/host-a) without
 * embedded NULs. Other types (IP, email, otherName) never identify a fleet host. */
static bool san_view(const GENERAL_NAME *gn, const char **ret_str, size_t *ret_len,
		     bool *ret_is_dns)
{
	const ASN1_IA5STRING *s;
	const char *str;
	int len;

	switch (gn->type) {
	case GEN_DNS:
		s = gn->d.dNSName;
		break;
	case GEN_URI:
		s = gn->d.uniformResourceIdentifier;
		break;
	default:
		return false;
	}
	if (!s)
		return false;
	str = (const char *)ASN1_STRING_get0_data(s);
	len = ASN1_STRING_length(s);
	if (!str || len <= 0 || len > TLS_PEER_NAME_MAX || memchr(str, '\0', (size_t)len))
		return false;
	*ret_str = str;
	*ret_len = (size_t)len;
	*ret_is_dns = gn->type == GEN_DNS;
	return true;
}

/* Exact match only. DNS names compare case-insensitively (RFC 4343); URIs byte for byte.
 * No wildcards and no CN fallback: every fleet host has its own certificate with its exact
 * name, so a wildcard could only widen who passes as a given host. */
static bool san_equals(const GENERAL_NAME *gn, const char *name)
{
	const char *str;
	size_t len;
	bool is_dns;

	if (!san_view(gn, &str, &len, &is_dns))
		return false;
	if (strlen(name) != len)
		return false;
	return is_dns ? strncasecmp(str, name, len) == 0 : memcmp(str, name, len) == 0;
}

static bool allow_list_contains(const struct allow_list *list, const GENERAL_NAME *gn)
{
	if (!list)
		return false;
	for (size_t i = 0; i < list->n_names; i++)
		if (san_equals(gn, list->names[i]))
			return true;
	return false;
}

/* The first SAN of cert on the allow-list, or NULL (empty allow-list: nobody). */
static const GENERAL_NAME *first_allowed_san(X509 *cert, const struct allow_list *list,
					     GENERAL_NAMES **ret_sans)
{
	GENERAL_NAMES *sans;

	sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	*ret_sans = sans;
	if (!sans)
		return NULL;
	for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);

		if (allow_list_contains(list, gn))
			return gn;
	}
	return NULL;
}

/* Runs once per chain element (and again per error found); only the leaf (depth 0) carries
 * the peer's identity. The chain verdict of OpenSSL stands: we only ever add a refusal. */
static int verify_callback(int preverify_ok, X509_STORE_CTX *store)
{
	const struct allow_list *list;
	GENERAL_NAMES *sans = NULL;
	X509 *cert;
	SSL *ssl;
	bool allowed;

	if (!preverify_ok)
		return 0;
	if (X509_STORE_CTX_get_error_depth(store) != 0)
		return 1;

	ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	cert = X509_STORE_CTX_get_current_cert(store);
	if (!ssl || !cert) {
		X509_STORE_CTX_set_error(store, X509_V_ERR_UNSPECIFIED);
		return 0;
	}
	list = ctx_allow_list(SSL_get_SSL_CTX(ssl));
	allowed = first_allowed_san(cert, list, &sans) != NULL;
	GENERAL_NAMES_free(sans);
	if (!allowed) {
		/* Read back by peer_conn to tell "not allow-listed" (-EPERM) from a bad chain. */
		X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
		return 0;
	}
	return 1;
}

/* "<what> <file>: <OpenSSL's first (root-cause) error>", then clear the queue. */
static void set_error(char *err, size_t err_size, const char *what, const char *file)
{
	char reason[256] = "unknown error";
	unsigned long e = ERR_get_error();

	if (e)
		ERR_error_string_n(e, reason, sizeof(reason));
	ERR_clear_error();
	if (err && err_size > 0)
		snprintf(err, err_size, "%s %s: %s", what, file ? file : "(null)", reason);
}

static int check_readable(const char *file, const char *what, char *err, size_t err_size)
{
	int r;

	if (!file || !*file) {
		if (err && err_size > 0)
			snprintf(err, err_size, "%s: no file configured", what);
		return -EINVAL;
	}
	if (access(file, R_OK) == 0)
		return 0;
	r = -errno;
	if (err && err_size > 0)
		snprintf(err, err_size, "%s %s: %s", what, file, strerror(-r));
	return r;
}

static int allow_list_copy(const struct tls_config *config, struct allow_list **ret_list)
{
	struct allow_list *list;
	size_t n = config->n_allowed_peers;

	if (n > TLS_MAX_ALLOWED_PEERS || (n > 0 && !config->allowed_peers))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		const char *name = config->allowed_peers[i];

		if (!name || !*name || strlen(name) > TLS_PEER_NAME_MAX)
			return -EINVAL;
	}

	list = calloc(1, sizeof(*list) + n * sizeof(list->names[0]));
	if (!list)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		list->names[i] = strdup(config->allowed_peers[i]);
		if (!list->names[i]) {
			allow_list_free(list);
			return -ENOMEM;
		}
		list->n_names = i + 1;
	}
	*ret_list = list;
	return 0;
}

/* Is the error queue's first entry a key/certificate mismatch? OpenSSL 3 already refuses a
 * mismatching key inside SSL_CTX_use_PrivateKey_file (X509_check_private_key). */
static bool error_is_key_mismatch(void)
{
	unsigned long e = ERR_peek_error();

	return ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
						  ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH);
}

int tls_ctx_new(const struct tls_config *config, bool is_server, SSL_CTX **ret_ctx, char *err,
		size_t err_size)
{
	struct allow_list *list = NULL;
	SSL_CTX *ctx = NULL;
	int r;

	if (!config || !ret_ctx)
		return -EINVAL;

	r = check_readable(config->ca_file, "CA file", err, err_size);
	if (r < 0)
		return r;
	r = check_readable(config->cert_file, "certificate file", err, err_size);
	if (r < 0)
		return r;
	r = check_readable(config->key_file, "key file", err, err_size);
	if (r < 0)
		return r;
	r = allow_list_copy(config, &list);
	if (r < 0) {
		if (err && err_size > 0)
			snprintf(err, err_size, "allow-list: %s",
				 r == -ENOMEM ? "out of memory"
					      : "empty or over-long name, or too many names");
		return r;
	}

	if (pthread_once(&allow_list_once, allow_list_index_init) != 0 || allow_list_index < 0) {
		set_error(err, err_size, "allow-list ex_data index", NULL);
		r = -ENOMEM;
		goto fail;
	}

	ERR_clear_error();
	ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		set_error(err, err_size, "SSL_CTX_new", NULL);
		r = -ENOMEM;
		goto fail;
	}
	/* From here the allow-list belongs to the context (freed by allow_list_ex_free). */
	if (!SSL_CTX_set_ex_data(ctx, allow_list_index, list)) {
		set_error(err, err_size, "SSL_CTX_set_ex_data", NULL);
		r = -ENOMEM;
		goto fail;
	}
	list = NULL;

	/* TLS 1.3 only: both ends are our own daemons, and 1.3 leaves no weak suites to pick. */
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
		set_error(err, err_size, "SSL_CTX_set_min/max_proto_version", NULL);
		r = -EINVAL;
		goto fail;
	}
	/* No resumption: every connection proves its certificate afresh, and the peer link is
	 * long-lived so a full handshake costs nothing that matters. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (is_server)
		SSL_CTX_set_num_tickets(ctx, 0);

	if (!SSL_CTX_load_verify_locations(ctx, config->ca_file, NULL)) {
		set_error(err, err_size, "cannot load CA file", config->ca_file);
		r = -EINVAL;
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, config->cert_file) != 1) {
		set_error(err, err_size, "cannot load certificate chain", config->cert_file);
		r = -EINVAL;
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, config->key_file, SSL_FILETYPE_PEM) != 1) {
		r = error_is_key_mismatch() ? -EKEYREJECTED : -EINVAL;
		set_error(err, err_size,
			  r == -EKEYREJECTED ? "key does not match certificate" : "cannot load key",
			  config->key_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		set_error(err, err_size, "key does not match certificate", config->key_file);
		r = -EKEYREJECTED;
		goto fail;
	}

	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_callback);
	/* Leaf + intermediates + root is plenty for a fleet PKI. */
	SSL_CTX_set_verify_depth(ctx, 4);

	*ret_ctx = ctx;
	return 0;

fail:
	ctx = ssl_ctx_unref(ctx);
	allow_list_free(list);
	ERR_clear_error();
	return r;
}

int tls_ctx_check_own_certificate(const struct tls_config *config, SSL_CTX *ctx, bool is_server,
				  char *err, size_t err_size)
{
	STACK_OF(X509) *chain = NULL;
	X509_STORE_CTX *store_ctx;
	X509 *leaf;
	int ok, error;

	if (!config || !ctx)
		return -EINVAL;
	leaf = SSL_CTX_get0_certificate(ctx);
	if (!leaf) {
		if (err && err_size > 0)
			snprintf(err, err_size, "certificate file %s: no certificate loaded",
				 config->cert_file);
		return -EINVAL;
	}
	(void)SSL_CTX_get0_chain_certs(ctx, &chain);
	store_ctx = X509_STORE_CTX_new();
	if (!store_ctx ||
	    !X509_STORE_CTX_init(store_ctx, SSL_CTX_get_cert_store(ctx), leaf, chain)) {
		X509_STORE_CTX_free(store_ctx);
		set_error(err, err_size, "cannot check certificate", config->cert_file);
		return -ENOMEM;
	}
	/* What the peer checks (RFC 5280 path and validity, the extended key usage of
	 * RFC 5280 4.2.1.12 for this end of the connection); names are the peer's business. */
	(void)X509_STORE_CTX_set_purpose(store_ctx, is_server ? X509_PURPOSE_SSL_SERVER
							      : X509_PURPOSE_SSL_CLIENT);
	ok = X509_verify_cert(store_ctx);
	error = X509_STORE_CTX_get_error(store_ctx);
	X509_STORE_CTX_free(store_ctx);
	ERR_clear_error();
	if (ok == 1)
		return 0;
	if (err && err_size > 0)
		snprintf(err, err_size,
			 "certificate file %s: not valid under the configured CA: %s",
			 config->cert_file, X509_verify_cert_error_string(error));
	return error == X509_V_ERR_CERT_HAS_EXPIRED || error == X509_V_ERR_CERT_NOT_YET_VALID
		       ? -EKEYEXPIRED
		       : -EKEYREJECTED;
}

int tls_peer_identity(SSL *ssl, char *ret_name, size_t name_size)
{
	const GENERAL_NAME *gn;
	GENERAL_NAMES *sans = NULL;
	const char *str;
	X509 *cert;
	size_t len;
	bool is_dns;
	int r;

	if (!ssl || !ret_name)
		return -EINVAL;
	if (!SSL_is_init_finished(ssl))
		return -ENOTCONN;
	cert = SSL_get0_peer_certificate(ssl);
	if (!cert || SSL_get_verify_result(ssl) != X509_V_OK)
		return -EPERM;

	gn = first_allowed_san(cert, ctx_allow_list(SSL_get_SSL_CTX(ssl)), &sans);
	if (!gn || !san_view(gn, &str, &len, &is_dns)) {
		r = -EPERM;
		goto out;
	}
	if (len >= name_size) {
		r = -ERANGE;
		goto out;
	}
	memcpy(ret_name, str, len);
	ret_name[len] = '\0';
	r = 0;
out:
	GENERAL_NAMES_free(sans);
	return r;
}

bool tls_peer_has_name(SSL *ssl, const char *name)
{
	GENERAL_NAMES *sans;
	X509 *cert;
	bool found = false;

	if (!ssl || !name || !*name)
		return false;
	cert = SSL_get0_peer_certificate(ssl);
	if (!cert)
		return false;
	sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	if (!sans)
		return false;
	for (int i = 0; i < sk_GENERAL_NAME_num(sans) && !found; i++)
		found = san_equals(sk_GENERAL_NAME_value(sans, i), name);
	GENERAL_NAMES_free(sans);
	return found;
}
