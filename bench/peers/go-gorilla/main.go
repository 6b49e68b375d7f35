// Command go-gorilla is the Go peer of hubbub-bench: a broadcast hub in the shape of
// gorilla/websocket's chat example. Every text message received on /ws is sent to every
// connected client (the sender included); /echo sends each message back to its sender.
//
// Built in GOPATH mode (GO111MODULE=off) against Debian's golang-github-gorilla-websocket-dev.
package main

import (
	"flag"
	"log"
	"net/http"
)

var addr = flag.String("addr", "127.0.0.1:8080", "http service address")

func main() {
	flag.Parse()
	hub := newHub()
	go hub.run()
	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		serveWs(hub, w, r)
	})
	http.HandleFunc("/echo", serveEcho)
	// No per-message logging: only start-up failures are reported.
	log.Fatal(http.ListenAndServe(*addr, nil))
}
