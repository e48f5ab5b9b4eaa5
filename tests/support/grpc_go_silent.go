// A gRPC server on grpc-go, for tests/grpc_peers.rs.
//
// One server-streaming method, /silent.Silent/Stream, that sends one message,
// stays silent for SILENCE_SECONDS, sends a second message and ends with
// status OK: the same as grpcio_silent.py, on another stack. Raw bytes, no
// protobuf: a codec registered under "proto" (the codec grpc-go picks for
// "application/grpc") passes messages through, and the method is registered
// with a hand-written ServiceDesc, so no .proto is generated. The server keeps
// grpc-go's ping policy (keepalive.EnforcementPolicy), with its MinTime set to
// MIN_PING_MS when given; without it the server has no keepalive options at
// all: grpc-go's defaults (MinTime 5 minutes, PermitWithoutStream false).
// Prints its port, then serves until stdin closes.
//
//	grpc_go_silent SILENCE_SECONDS [MIN_PING_MS]
//
// Built by tests/support/grpcgo.rs in GOPATH mode, offline, against Debian's
// golang-google-grpc-dev (grpc-go 1.33).
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/keepalive"
)

// rawCodec passes messages through as bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return b, nil
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append([]byte(nil), data...)
	return nil
}

// Name replaces grpc-go's protobuf codec, the one it uses for requests
// whose content-type has no subtype.
func (rawCodec) Name() string { return "proto" }

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		fmt.Fprintln(os.Stderr, "usage: grpc_go_silent SILENCE_SECONDS [MIN_PING_MS]")
		os.Exit(2)
	}
	seconds, err := strconv.ParseFloat(os.Args[1], 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "SILENCE_SECONDS:", err)
		os.Exit(2)
	}
	silence := time.Duration(seconds * float64(time.Second))
	var options []grpc.ServerOption
	if len(os.Args) > 2 {
		ms, err := strconv.ParseUint(os.Args[2], 10, 32)
		if err != nil {
			fmt.Fprintln(os.Stderr, "MIN_PING_MS:", err)
			os.Exit(2)
		}
		options = append(options, grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: time.Duration(ms) * time.Millisecond,
		}))
	}
	encoding.RegisterCodec(rawCodec{})

	stream := func(_ interface{}, s grpc.ServerStream) error {
		var request []byte
		if err := s.RecvMsg(&request); err != nil {
			return err
		}
		if err := s.SendMsg([]byte("first")); err != nil {
			return err
		}
		select {
		case <-time.After(silence):
		case <-s.Context().Done():
			return s.Context().Err()
		}
		return s.SendMsg([]byte("last"))
	}
	server := grpc.NewServer(options...)
	server.RegisterService(&grpc.ServiceDesc{
		ServiceName: "silent.Silent",
		HandlerType: (*interface{})(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Stream",
			Handler:       stream,
			ServerStreams: true,
		}},
	}, struct{}{})

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	// os.Stdout is not buffered: the line is out when Println returns.
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	go func() {
		if err := server.Serve(listener); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
	}()
	_, _ = io.Copy(io.Discard, os.Stdin)
	server.Stop()
}
