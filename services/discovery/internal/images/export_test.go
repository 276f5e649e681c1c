package images

// NewBaseline returns a Client that resolves as discovery did before it
// remembered tags: every candidate's manifest fetched by tag (a GET when
// metadata is needed) and cacheByTag ignored. It is the same-run baseline
// of this package's tests and benchmarks and is built into nothing else.
func NewBaseline(o Options) *Client {
	c := New(o)
	c.baseline = true
	return c
}
