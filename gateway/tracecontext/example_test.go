package tracecontext_test

import (
	"fmt"
	"net/http"

	"github.com/pyairtable/api-gateway/gateway/tracecontext"
)

func ExampleParse() {
	c, ok := tracecontext.Parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	fmt.Println(ok, c.TraceID, c.ParentID, c.Sampled())

	_, ok = tracecontext.Parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	fmt.Println(ok)
	// Output:
	// true 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 true
	// false
}

func ExampleStart() {
	in := http.Header{}
	in.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	in.Set("Tracestate", "congo=t61rcWkgMzE")

	c := tracecontext.Start(in) // continue the caller's trace with a new span

	out := http.Header{}
	c.Inject(out) // what the upstream request carries
	fmt.Println("trace: ", c.TraceID)
	fmt.Println("parent:", c.ParentID)
	fmt.Println("span is new:", c.SpanID != c.ParentID)
	fmt.Println("upstream parent is our span:", out.Get("Traceparent") == c.Traceparent())
	fmt.Println("state:", out.Get("Tracestate"))
	// Output:
	// trace:  4bf92f3577b34da6a3ce929d0e0e4736
	// parent: 00f067aa0ba902b7
	// span is new: true
	// upstream parent is our span: true
	// state: congo=t61rcWkgMzE
}

func ExampleContext_AppendTraceparent() {
	c := tracecontext.Context{
		TraceID: tracecontext.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:  tracecontext.SpanID{0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		Flags:   tracecontext.FlagSampled,
	}
	buf := make([]byte, 0, 64) // reused across requests: no allocation
	buf = c.AppendTraceparent(buf[:0])
	fmt.Printf("%s\n", buf)
	// Output:
	// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
}

func ExampleExporterFunc() {
	var exp tracecontext.Exporter = tracecontext.ExporterFunc(func(s *tracecontext.Span) {
		// A real exporter copies the span (s.Clone()) onto a queue and returns.
		fmt.Println(s.Name, s.Status, s.Context.TraceID)
	})
	c, _ := tracecontext.Parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	exp.ExportSpan(&tracecontext.Span{Context: c, Name: "users", Status: 200})
	// Output:
	// users 200 4bf92f3577b34da6a3ce929d0e0e4736
}
