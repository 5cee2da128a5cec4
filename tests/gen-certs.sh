#!/bin/sh
# gen-certs.sh DIR - a throwaway PKI for the peer-link and control-API TLS tests: a fleet CA, two
# hosts, two controllers, and the certificates the daemon must refuse (other CA, SAN not
# allow-listed, expired), on either end of a connection and for its own rotation. EC P-256, quiet.
set -eu

dir=${1:?usage: gen-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"

outputs="ca.pem ca.key host-a.pem host-a.key host-b.pem host-b.key other-ca.pem other-ca.key
	other-host.pem other-host.key evil.pem evil.key expired.pem expired.key uri.pem uri.key
	ctl-operator.pem ctl-operator.key ctl-reader.pem ctl-reader.key ctl-other.pem ctl-other.key
	host-a-next.pem host-a-next.key other-host-b.pem other-host-b.key expired-b.pem expired-b.key
	ctl-expired.pem ctl-expired.key"

# Idempotent: a complete set is kept as it is (a partial one, from a killed run, is redone).
complete=1
for f in $outputs; do
	[ -s "$f" ] || complete=0
done
[ "$complete" = 1 ] && exit 0

umask 077 # keys (and everything else) 0600
work=$(mktemp -d ./.gen-certs.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM

# Run a command quietly; show its output only if it fails.
q() {
	if ! "$@" >"$work/log" 2>&1; then
		echo "gen-certs.sh: failed: $*" >&2
		cat "$work/log" >&2
		exit 1
	fi
}

cat >"$work/openssl.cnf" <<'EOF'
SAN = DNS:unset.test
[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
CN = unset
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
# Each side of the peer link is TLS client and server in turn, so leaves carry both purposes
# (OpenSSL checks serverAuth on the server's leaf and clientAuth on the client's).
[ v3_leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = $ENV::SAN
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
# `openssl x509 -req` (OpenSSL 3.0) cannot back-date a certificate; `openssl ca` can
# (-startdate/-enddate), so the expired leaf comes from this minimal CA database.
[ ca ]
default_ca = fleet_ca
[ fleet_ca ]
database = $ENV::WORK/index.txt
new_certs_dir = $ENV::WORK
serial = $ENV::WORK/serial
certificate = $ENV::WORK/ca.pem
private_key = $ENV::WORK/ca.key
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
commonName = supplied
EOF
export WORK="$work"
cnf="$work/openssl.cnf"

newkey() {
	q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/$1.key"
}

# newca NAME CN
newca() {
	newkey "$1"
	q openssl req -config "$cnf" -new -x509 -key "$work/$1.key" -subj "/CN=$2" -days 3650 \
		-extensions v3_ca -out "$work/$1.pem"
}

# newleaf NAME SAN CA
newleaf() {
	newkey "$1"
	q openssl req -config "$cnf" -new -key "$work/$1.key" -subj "/CN=$1" -out "$work/$1.csr"
	SAN=$2 q openssl x509 -req -in "$work/$1.csr" -CA "$work/$3.pem" -CAkey "$work/$3.key" \
		-set_serial "0x$(openssl rand -hex 8)" -days 3650 \
		-extfile "$cnf" -extensions v3_leaf -out "$work/$1.pem"
}

newca ca "vcounterd test fleet CA"
newca other-ca "vcounterd test other CA"
newleaf host-a DNS:host-a.test ca
newleaf host-b DNS:host-b.test ca
# Same name as host-a, but signed by a CA the fleet does not trust.
newleaf other-host DNS:host-a.test other-ca
# Signed by the fleet CA, but its name is on no allow-list.
newleaf evil DNS:host-evil.test ca
# A URI identity (SPIFFE style) and no DNS name at all.
newleaf uri URI:spiffe://fleet.test/host-u ca
# Fleet controllers on the control API (TCP + TLS): one with the operator
# role, one read-only, and one claiming the operator's name from another CA.
newleaf ctl-operator DNS:ctl-operator.test ca
newleaf ctl-reader DNS:ctl-reader.test ca
newleaf ctl-other DNS:ctl-operator.test other-ca

# A second certificate for host-a.test: what a rotation on disk replaces host-a's with.
newleaf host-a-next DNS:host-a.test ca
# host-b.test's name from a CA the fleet does not trust: a target the source must refuse.
newleaf other-host-b DNS:host-b.test other-ca

: >"$work/index.txt"
echo 01 >"$work/serial"
# newexpired NAME SAN: valid chain and an allow-listed name, but the validity ended in 2020.
newexpired() {
	newkey "$1"
	q openssl req -config "$cnf" -new -key "$work/$1.key" -subj "/CN=$1" -out "$work/$1.csr"
	SAN=$2 q openssl ca -config "$cnf" -batch -notext -extensions v3_leaf \
		-startdate 200101000000Z -enddate 200102000000Z \
		-in "$work/$1.csr" -out "$work/$1.pem"
}
newexpired expired DNS:host-a.test
newexpired expired-b DNS:host-b.test
newexpired ctl-expired DNS:ctl-operator.test

for f in $outputs; do
	mv -f "$work/$f" "$f"
done
