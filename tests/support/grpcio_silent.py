"""A gRPC server on grpcio (gRPC C-core), for tests/grpc_peers.rs.

One server-streaming method, /silent.Silent/Stream, that sends one message,
stays silent for SILENCE seconds, sends a second message and ends with
status OK. Raw bytes, no protobuf. The server keeps C-core's ping policy,
with its minimum interval between pings set to MIN_PING_MS when given (C-core's
default is 5 minutes; the test scales it down). Prints its port, then
serves until stdin closes.

    python3 grpcio_silent.py SILENCE [MIN_PING_MS]
"""

import sys
import time
from concurrent import futures

import grpc


def main():
    silence = float(sys.argv[1])
    options = []
    if len(sys.argv) > 2:
        options.append(("grpc.http2.min_ping_interval_without_data_ms", int(sys.argv[2])))

    def stream(request, context):
        yield b"first"
        time.sleep(silence)
        yield b"last"

    handler = grpc.method_handlers_generic_handler(
        "silent.Silent", {"Stream": grpc.unary_stream_rpc_method_handler(stream)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=options)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
