package gitmirror

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/klauspost/compress/zlib"
)

// An object stored whole in a pack (not as a delta) is a header and a zlib
// stream of its content. go-git's pack reader inflates it one byte at a
// time through its scanner with the standard library's flate and then
// hashes the result again to learn the hash the index already gave; a
// checkout of a large tree spends most of its time there. readWhole reads
// such an object with one positioned read stream and klauspost's inflater
// (several times faster on a bufio.Reader), keeping the index's hash.
// Deltas are left to go-git, which resolves them against its cache.

// maxWholeObject bounds what readWhole reads into memory: bigger objects
// go through go-git's reader.
const maxWholeObject = 64 << 20

// Pack object types (gitformat-pack).
const (
	packCommit = 1
	packTree   = 2
	packBlob   = 3
	packTag    = 4
)

var (
	bufPool  = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}
	zlibPool sync.Pool // of io.ReadCloser that are zlib.Resetter
)

// readWhole reads the object at off of the pack file f when it is stored
// whole; ok is false for a delta or an object over maxWholeObject.
func readWhole(f *os.File, h plumbing.Hash, off int64) (o plumbing.EncodedObject, ok bool, err error) {
	br := bufPool.Get().(*bufio.Reader)
	br.Reset(io.NewSectionReader(f, off, 1<<62))
	defer func() {
		br.Reset(nil)
		bufPool.Put(br)
	}()
	typ, size, err := readPackHeader(br)
	if err != nil {
		return nil, false, fmt.Errorf("read object %s: %w", h, err)
	}
	var t plumbing.ObjectType
	switch typ {
	case packCommit:
		t = plumbing.CommitObject
	case packTree:
		t = plumbing.TreeObject
	case packBlob:
		t = plumbing.BlobObject
	case packTag:
		t = plumbing.TagObject
	default:
		return nil, false, nil
	}
	if size > maxWholeObject {
		return nil, false, nil
	}
	zr, err := inflater(br)
	if err != nil {
		return nil, false, fmt.Errorf("inflate object %s: %w", h, err)
	}
	defer zlibPool.Put(zr)
	data := make([]byte, size)
	if _, err := io.ReadFull(zr, data); err != nil {
		return nil, false, fmt.Errorf("inflate object %s: %w", h, err)
	}
	// The stream must end here; reading its end checks its checksum.
	var one [1]byte
	if n, err := zr.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("longer than its header says")
		}
		return nil, false, fmt.Errorf("inflate object %s: %w", h, err)
	}
	return &wholeObject{hash: h, typ: t, data: data}, true, nil
}

// inflater returns a pooled zlib reader reading r.
func inflater(r io.Reader) (io.ReadCloser, error) {
	if zr, ok := zlibPool.Get().(io.ReadCloser); ok {
		if err := zr.(zlib.Resetter).Reset(r, nil); err != nil {
			return nil, err
		}
		return zr, nil
	}
	return zlib.NewReader(r)
}

// readPackHeader reads an object's type and inflated size.
func readPackHeader(r io.ByteReader) (typ byte, size int64, err error) {
	c, err := r.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	typ = (c >> 4) & 7
	size = int64(c & 0x0f)
	for shift := 4; c&0x80 != 0; shift += 7 {
		if shift > 56 {
			return 0, 0, errors.New("object size overflows")
		}
		if c, err = r.ReadByte(); err != nil {
			return 0, 0, err
		}
		size |= int64(c&0x7f) << shift
	}
	return typ, size, nil
}

// wholeObject is an object read by readWhole: its hash is the one the
// pack index names, not computed again. It is read-only.
type wholeObject struct {
	hash plumbing.Hash
	typ  plumbing.ObjectType
	data []byte
}

var _ plumbing.EncodedObject = (*wholeObject)(nil)

func (o *wholeObject) Hash() plumbing.Hash           { return o.hash }
func (o *wholeObject) Type() plumbing.ObjectType     { return o.typ }
func (o *wholeObject) SetType(t plumbing.ObjectType) { o.typ = t }
func (o *wholeObject) Size() int64                   { return int64(len(o.data)) }

// SetSize does nothing: the size is the content's.
func (o *wholeObject) SetSize(int64) {}

func (o *wholeObject) Reader() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(o.data)), nil
}

func (o *wholeObject) Writer() (io.WriteCloser, error) {
	return nil, errors.New("a packed object is read-only")
}
