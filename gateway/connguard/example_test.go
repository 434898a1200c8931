package connguard_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/pyairtable/api-gateway/gateway/connguard"
)

func Example() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	gl := connguard.Listen(ln, connguard.Settings{MaxConnsPerIP: 100})
	srv := &http.Server{
		ConnContext: connguard.ConnContext,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// First thing, before anything is forwarded.
			if err := connguard.Check(r.Context()); err != nil {
				w.Header().Set("Connection", "close")
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Fprintln(w, "served", r.Method, r.URL.Path)
		}),
	}
	go srv.Serve(gl)
	defer srv.Close()

	// Two pipelined requests; the second carries both Content-Length and
	// Transfer-Encoding, which net/http alone would accept.
	c, err := net.Dial("tcp", gl.Addr().String())
	if err != nil {
		panic(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: example.com\r\n\r\n"+
		"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 6\r\n"+
		"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nX")
	br := bufio.NewReader(c)
	for range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s: %s", resp.Status, body)
	}
	// The server closed the connection after the 400.
	if _, err := br.ReadByte(); err == io.EOF {
		fmt.Println("connection closed")
	}
	fmt.Printf("%+v\n", gl.Stats())
	// Output:
	// 200 OK: served GET /hello
	// 400 Bad Request: connguard: ambiguous request framing: Content-Length with Transfer-Encoding
	// connection closed
	// {Accepted:1 RefusedPerIP:0 BadFraming:1 Open:0}
}
