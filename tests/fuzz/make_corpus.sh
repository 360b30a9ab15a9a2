#!/usr/bin/env bash
# make_corpus.sh BIN_DIR [OUT_DIR] - seed corpora for the TLS targets, from
# real handshakes on loopback:
#   OUT/certs/       a CA and two server certificates (EC P-256, RSA 2048)
#                    made here with the openssl CLI, never committed
#   OUT/tls_client/  what `openssl s_server` sent to ringnet's client,
#                    TLS 1.3 and 1.2, several suites, groups (one with a
#                    HelloRetryRequest), ALPN, both certificates
#   OUT/tls_server/  what `openssl s_client` sent to ringnet's server
# BIN_DIR holds tls_record and the targets (build/fuzz/tests/fuzz); OUT
# defaults to BIN_DIR/corpus, where the targets look for the certificates.
# Each seed is recorded by tls_record (the target's own code, with its
# repeatable random stream) and then replayed into the target: a seed that
# does not replay to a finished handshake fails the script.
set -euo pipefail

bin=$(cd "${1:?usage: make_corpus.sh BIN_DIR [OUT_DIR]}" && pwd)
out=${2:-$bin/corpus}
mkdir -p "$out"
out=$(cd "$out" && pwd)
certs=$out/certs
export RN_FUZZ_CERTS=$certs

# The sanitizer runtimes cannot place their shadow memory with more than
# 28 bits of mmap randomization (as ci/test.sh's sanitizer_run).
run() {
    if [ "$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)" -gt 28 ]; then
        setarch "$(uname -m)" -R "$@"
    else
        "$@"
    fi
}

# ---- certificates --------------------------------------------------------------
rm -rf "$certs" "$out/tls_client" "$out/tls_server"
mkdir -p "$certs" "$out/tls_client" "$out/tls_server"
(
    cd "$certs"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -out ca.pem -days 3650 -subj "/CN=ringnet fuzz CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    printf 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key 2>/dev/null
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key 2>/dev/null
    for k in server rsa; do
        openssl req -new -key $k.key -out $k.csr -subj "/CN=localhost"
        openssl x509 -req -in $k.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -out $k.pem -extfile server.ext 2>/dev/null
    done
    rm -f ./*.csr ca.srl
)

logs=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$logs"' EXIT

# ---- what servers send: ringnet client <- openssl s_server ----------------------
# client_seed NAME S_SERVER_ARGS...
client_seed() {
    local name=$1
    shift
    local try port pid
    for try in 1 2 3 4 5 6 7 8; do
        port=$((20000 + (RANDOM % 30000)))
        : >"$logs/$name.server"
        openssl s_server -accept "127.0.0.1:$port" -naccept 1 -www "$@" \
            >"$logs/$name.server" 2>&1 </dev/null &
        pid=$!
        # listening (it says ACCEPT), or gone (the port was taken)
        for _ in $(seq 200); do
            if grep -q '^ACCEPT' "$logs/$name.server"; then break; fi
            if ! kill -0 $pid 2>/dev/null; then break; fi
            sleep 0.05
        done
        if kill -0 $pid 2>/dev/null; then break; fi
        wait $pid 2>/dev/null || true
        pid=
    done
    [ -n "$pid" ] || { echo "make_corpus: s_server for $name did not start:"; cat "$logs/$name.server"; exit 1; }
    if ! run timeout 20 "$bin/tls_record" client "$port" "$out/tls_client/$name" >"$logs/$name.rec" 2>&1; then
        echo "make_corpus: recording $name failed:"; cat "$logs/$name.rec" "$logs/$name.server"; exit 1
    fi
    timeout 10 tail --pid=$pid -f /dev/null || kill $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
    echo "tls_client/$name: $(tail -n 1 "$logs/$name.rec") ($(stat -c %s "$out/tls_client/$name") bytes)"
}

ec=(-cert "$certs/server.pem" -key "$certs/server.key")
rsa=(-cert "$certs/rsa.pem" -key "$certs/rsa.key")
client_seed tls13 "${ec[@]}" -tls1_3
client_seed tls13_chacha "${ec[@]}" -tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256
client_seed tls13_aes128 "${ec[@]}" -tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256 -num_tickets 0
client_seed tls13_hrr_p256 "${ec[@]}" -tls1_3 -groups P-256
client_seed tls13_alpn_h2 "${ec[@]}" -tls1_3 -alpn h2
client_seed tls13_rsa "${rsa[@]}" -tls1_3
client_seed tls12 "${ec[@]}" -tls1_2
client_seed tls12_chacha "${ec[@]}" -tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305
client_seed tls12_rsa "${rsa[@]}" -tls1_2 -cipher ECDHE-RSA-AES256-GCM-SHA384
client_seed tls12_alpn "${ec[@]}" -tls1_2 -alpn http/1.1 -groups P-384

# ---- what clients send: ringnet server <- openssl s_client ----------------------
# server_seed NAME S_CLIENT_ARGS...
server_seed() {
    local name=$1
    shift
    : >"$logs/$name.rec"
    run timeout 20 "$bin/tls_record" server "$out/tls_server/$name" >"$logs/$name.rec" 2>&1 &
    local rec=$! port=
    for _ in $(seq 200); do
        port=$(sed -n 's/^port \([0-9]*\)$/\1/p' "$logs/$name.rec" 2>/dev/null || true)
        [ -n "$port" ] && break
        kill -0 $rec 2>/dev/null || break
        sleep 0.05
    done
    [ -n "$port" ] || { echo "make_corpus: tls_record server for $name did not start:"; cat "$logs/$name.rec"; exit 1; }
    # stdin: one line, then EOF: s_client sends it, then its close_notify
    printf 'hello from openssl s_client\n' |
        timeout 15 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
            -verify_hostname localhost -CAfile "$certs/ca.pem" -verify_return_error "$@" \
            >"$logs/$name.client" 2>&1 || true
    if ! wait $rec; then
        echo "make_corpus: recording $name failed:"; cat "$logs/$name.rec" "$logs/$name.client"; exit 1
    fi
    echo "tls_server/$name: $(tail -n 1 "$logs/$name.rec") ($(stat -c %s "$out/tls_server/$name") bytes)"
}

server_seed tls13 -tls1_3
server_seed tls13_chacha -tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256
server_seed tls13_hrr -tls1_3 -groups P-521:X25519
server_seed tls13_p256 -tls1_3 -groups P-256
server_seed tls13_alpn -tls1_3 -alpn h2,http/1.1
server_seed tls12 -tls1_2
server_seed tls12_chacha -tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305
server_seed tls12_alpn -tls1_2 -alpn http/1.1 -groups P-384:P-256

# ---- every seed must replay to a finished handshake ------------------------------
for side in client server; do
    for f in "$out/tls_$side"/*; do
        # libFuzzer may run an input twice (its leak check): every run counts
        r=$(RN_FUZZ_VERBOSE=1 run "$bin/fuzz_tls_$side" "$f" 2>&1 | grep '^rn_fuzz ' | sort -u || true)
        case $r in
        *$'\n'*) echo "make_corpus: tls_$side/$(basename "$f") replays differently each time: $r"; exit 1 ;;
        *" handshake=0 "*) echo "replay tls_$side/$(basename "$f"): ${r#rn_fuzz }" ;;
        *) echo "make_corpus: tls_$side/$(basename "$f") does not replay to a handshake: $r"; exit 1 ;;
        esac
    done
done
echo "make_corpus: $(ls "$out/tls_client" | wc -l) client and $(ls "$out/tls_server" | wc -l) server seeds in $out"
