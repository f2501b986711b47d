package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// runServeDirect runs the baseline: a Go HTTP/1.1 server with mutual TLS
// (TLS 1.3 only, a client certificate required and verified) and trivial
// in-process handlers, the floor a caller would get if the network let it
// call the server directly. With --plain it serves the same handlers over
// plain HTTP: the origin server behind ssh -R. It prints
// {"addr": "host:port"} on standard output once it listens, and serves
// until it is signalled.
//
//	GET  /time  {"time_from_server": <epoch float>}, as the time plugin
//	POST /echo  the request body streamed back as it arrives, as the echo
//	            plugin, with its content type
func runServeDirect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmdServeDirect, flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "`address` to listen on")
	caFile := fs.String("ca", "", "CA `file` that signs client certificates")
	certFile := fs.String("cert", "", "server certificate `file`")
	keyFile := fs.String("key", "", "server key `file`")
	plain := fs.Bool("plain", false, "serve plain HTTP, no TLS")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           directHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		// HTTP/1.1 only: an empty TLSNextProto turns HTTP/2 off.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     nil,
	}
	if !*plain {
		cfg, err := directServerTLS(*caFile, *certFile, *keyFile)
		if err != nil {
			return err
		}
		srv.TLSConfig = cfg
		ln = tls.NewListener(ln, cfg)
	}
	if err := json.NewEncoder(stdout).Encode(map[string]string{"addr": ln.Addr().String()}); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// directServerTLS is the baseline's TLS: 1.3 only, client certificates
// from the CA required.
func directServerTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load the server certificate: %w", err)
	}
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{"http/1.1"},
	}, nil
}

// loadPool reads a PEM file of CA certificates.
func loadPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read the CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	return pool, nil
}

// directHandler serves what the time and echo plugins serve, in process.
func directHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /time", func(w http.ResponseWriter, _ *http.Request) {
		b, _ := json.Marshal(map[string]float64{"time_from_server": float64(time.Now().UnixNano()) / 1e9})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	})
	bufs := sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		// Read and write at once: the reply streams while the body arrives.
		_ = http.NewResponseController(w).EnableFullDuplex()
		if ct := r.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		if r.ContentLength >= 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
		}
		buf := bufs.Get().(*[]byte)
		defer bufs.Put(buf)
		_, _ = io.CopyBuffer(w, r.Body, *buf)
	})
	return mux
}
