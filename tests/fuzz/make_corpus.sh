#!/usr/bin/env bash
# make_corpus.sh BIN_DIR [OUT_DIR] - seed corpora for the TLS targets, from
# real handshakes on loopback:
#   OUT/certs/       a CA, two server certificates (EC P-256, RSA 2048) and
#                    a client one, made here with the openssl CLI, never
#                    committed
#   OUT/tls_client/  what `openssl s_server` sent to ringnet's client,
#                    TLS 1.3 and 1.2, several suites, groups (one with a
#                    HelloRetryRequest), ALPN, both certificates, an IP
#                    address as the host, a server asking for the client's
#                    certificate
#   OUT/tls_server/  what `openssl s_client` sent to ringnet's server,
#                    the same variety, and mTLS with and without a client
#                    certificate
# BIN_DIR holds tls_record and the targets (build/fuzz/tests/fuzz); OUT
# defaults to BIN_DIR/corpus, where the targets look for the certificates.
# Each seed is recorded by tls_record (the target's own code, with its
# repeatable random stream) and then replayed into the target: a seed that
# does not replay to the outcome it was recorded with (a finished handshake,
# the same plaintext byte count and end; or the refusal it was made to
# show) fails the script.
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
    printf 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:ringnet-client\nextendedKeyUsage=clientAuth\n' > client.ext
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out client.key 2>/dev/null
    openssl req -new -key client.key -out client.csr -subj "/CN=ringnet-client"
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
        -out client.pem -extfile client.ext 2>/dev/null
    rm -f ./*.csr ca.srl
)

logs=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$logs"' EXIT

# ---- what servers send: ringnet client <- openssl s_server ----------------------
# check_outcome SIDE NAME EXPECT: the recording's outcome line must match
# the pattern EXPECT; it is kept for the replay.
check_outcome() {
    local line
    line=$(grep -E '^(client|server): mode=' "$logs/$2.rec" | tail -n 1 || true)
    # shellcheck disable=SC2254
    case $line in
    *" "$3" "* | *" "$3) ;;
    *) echo "make_corpus: $1/$2 recorded \"$line\", not $3:"; cat "$logs/$2".*; exit 1 ;;
    esac
    echo "${line#*: }" >"$logs/$1.$2.outcome"
    echo "$1/$2: ${line#*: } ($(stat -c %s "$out/$1/$2") bytes)"
}

# client_seed NAME MODE EXPECT S_SERVER_ARGS...
client_seed() {
    local name=$1 mode=$2 expect=$3
    shift 3
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
    if ! run timeout 20 "$bin/tls_record" client "$mode" "$port" "$out/tls_client/$name" >"$logs/$name.rec" 2>&1; then
        echo "make_corpus: recording $name failed:"; cat "$logs/$name.rec" "$logs/$name.server"; exit 1
    fi
    timeout 10 tail --pid=$pid -f /dev/null || kill $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
    check_outcome tls_client "$name" "$expect"
}

ec=(-cert "$certs/server.pem" -key "$certs/server.key")
rsa=(-cert "$certs/rsa.pem" -key "$certs/rsa.key")
ok="handshake=0"
client_seed tls13 0 $ok "${ec[@]}" -tls1_3
client_seed tls13_chacha 0 $ok "${ec[@]}" -tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256
client_seed tls13_aes128 0 $ok "${ec[@]}" -tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256 -num_tickets 0
client_seed tls13_hrr_p256 0 $ok "${ec[@]}" -tls1_3 -groups P-256
client_seed tls13_alpn_h2 0 $ok "${ec[@]}" -tls1_3 -alpn h2
client_seed tls13_rsa 0 $ok "${rsa[@]}" -tls1_3
client_seed tls13_ip 1 $ok "${ec[@]}" -tls1_3
client_seed tls13_mtls 2 $ok "${ec[@]}" -tls1_3 -Verify 1 -CAfile "$certs/ca.pem"
client_seed tls13_cert_asked 0 $ok "${ec[@]}" -tls1_3 -verify 1 -CAfile "$certs/ca.pem"
client_seed tls12 0 $ok "${ec[@]}" -tls1_2
client_seed tls12_chacha 0 $ok "${ec[@]}" -tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305
client_seed tls12_rsa 0 $ok "${rsa[@]}" -tls1_2 -cipher ECDHE-RSA-AES256-GCM-SHA384
client_seed tls12_alpn 0 $ok "${ec[@]}" -tls1_2 -alpn http/1.1 -groups P-384
client_seed tls12_ip 1 $ok "${ec[@]}" -tls1_2
client_seed tls12_mtls 2 $ok "${ec[@]}" -tls1_2 -Verify 1 -CAfile "$certs/ca.pem"

# ---- what clients send: ringnet server <- openssl s_client ----------------------
# server_seed NAME MODE EXPECT S_CLIENT_ARGS...
server_seed() {
    local name=$1 mode=$2 expect=$3
    shift 3
    : >"$logs/$name.rec"
    run timeout 20 "$bin/tls_record" server "$mode" "$out/tls_server/$name" >"$logs/$name.rec" 2>&1 &
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
    check_outcome tls_server "$name" "$expect"
}

cli=(-cert "$certs/client.pem" -key "$certs/client.key")
server_seed tls13 0 $ok -tls1_3
server_seed tls13_chacha 0 $ok -tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256
server_seed tls13_hrr 0 $ok -tls1_3 -groups P-521:X25519
server_seed tls13_p256 0 $ok -tls1_3 -groups P-256
server_seed tls13_alpn 0 $ok -tls1_3 -alpn h2,http/1.1
server_seed tls13_mtls 1 $ok -tls1_3 "${cli[@]}"
server_seed tls13_mtls_nocert 1 "handshake=-20003" -tls1_3
server_seed tls12 0 $ok -tls1_2
server_seed tls12_chacha 0 $ok -tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305
server_seed tls12_alpn 0 $ok -tls1_2 -alpn http/1.1 -groups P-384:P-256
server_seed tls12_mtls 1 $ok -tls1_2 "${cli[@]}"

# ---- every seed must replay to the outcome it was recorded with ---------------
for side in client server; do
    for f in "$out/tls_$side"/*; do
        name=$(basename "$f")
        want=$(cat "$logs/tls_$side.$name.outcome")
        # libFuzzer may run an input twice (its leak check): every run counts
        got=$(RN_FUZZ_VERBOSE=1 run "$bin/fuzz_tls_$side" "$f" 2>&1 | sed -n 's/^rn_fuzz [a-z]*: //p' |
            sed 's/ rng_opens=[0-9]*//' | sort -u || true)
        if [ "$got" != "$want" ]; then
            echo "make_corpus: tls_$side/$name replays as \"$got\", recorded as \"$want\""
            exit 1
        fi
        echo "replay tls_$side/$name: $got"
    done
done
echo "make_corpus: $(ls "$out/tls_client" | wc -l) client and $(ls "$out/tls_server" | wc -l) server seeds in $out"
