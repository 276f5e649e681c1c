package state

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// KeySize is the size of the secret-encryption key (AES-256).
const KeySize = 32

// Sealer encrypts and decrypts values with AES-256-GCM. Each sealed value is
// nonce || ciphertext, bound to its KV key as additional data, so a sealed
// value copied to another key does not open.
type Sealer struct{ aead cipher.AEAD }

// NewSealer returns a Sealer for a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secret key: %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext bound to aad.
func (s *Sealer) Seal(plaintext, aad []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return s.aead.Seal(nonce, nonce, plaintext, aad), nil
}

// ErrUnseal means a sealed value could not be opened: the wrong key, or a
// value that was tampered with.
var ErrUnseal = errors.New("cannot decrypt (wrong CARAVAN_SECRET_KEY or tampered value)")

// Open decrypts a sealed value bound to aad.
func (s *Sealer) Open(sealed, aad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, ErrUnseal
	}
	out, err := s.aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, ErrUnseal
	}
	return out, nil
}

// LoadKey returns the secret-encryption key: from b64 (the value of
// CARAVAN_SECRET_KEY, base64 of 32 bytes) when set; otherwise from the
// file at path, which is created with a new random key (mode 0600) when it
// does not exist yet. created reports that a key was generated.
func LoadKey(b64, path string) (key []byte, created bool, err error) {
	if b64 != "" {
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil {
			return nil, false, errors.New("CARAVAN_SECRET_KEY: not valid base64")
		}
		if len(key) != KeySize {
			return nil, false, fmt.Errorf("CARAVAN_SECRET_KEY: %d bytes, want %d", len(key), KeySize)
		}
		return key, false, nil
	}
	b, err := os.ReadFile(path)
	if err == nil {
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(key) != KeySize {
			return nil, false, fmt.Errorf("secret key file %s: not base64 of %d bytes", path, KeySize)
		}
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("read secret key file: %w", err)
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, false, fmt.Errorf("generate secret key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create secret key dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadKey("", path) // another process won the race
	}
	if err != nil {
		return nil, false, fmt.Errorf("create secret key file: %w", err)
	}
	_, werr := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return nil, false, fmt.Errorf("write secret key file: %w", err)
	}
	return key, true, nil
}

// PutSecret seals v (as JSON) and stores it at key in the secrets bucket.
func (s *Store) PutSecret(ctx context.Context, key string, v any) (uint64, error) {
	if s.sealer == nil {
		return 0, errors.New("put secret: no secret key configured")
	}
	plain, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode secret %s: %w", key, err)
	}
	sealed, err := s.sealer.Seal(plain, []byte(key))
	if err != nil {
		return 0, err
	}
	rev, err := s.kvs[Secrets].Put(ctx, key, sealed)
	if err != nil {
		return 0, fmt.Errorf("put secret %s: %w", key, err)
	}
	return rev, nil
}

// GetSecret opens the secret at key into v.
func (s *Store) GetSecret(ctx context.Context, key string, v any) (uint64, error) {
	if s.sealer == nil {
		return 0, errors.New("get secret: no secret key configured")
	}
	e, err := s.kvs[Secrets].Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return 0, fmt.Errorf("secret %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("get secret %s: %w", key, err)
	}
	plain, err := s.sealer.Open(e.Value(), []byte(key))
	if err != nil {
		return 0, fmt.Errorf("secret %s: %w", key, err)
	}
	if err := json.Unmarshal(plain, v); err != nil {
		return 0, fmt.Errorf("decode secret %s: %w", key, err)
	}
	return e.Revision(), nil
}

// DeleteSecret removes the secret at key.
func (s *Store) DeleteSecret(ctx context.Context, key string) error {
	return Delete(ctx, s.kvs[Secrets], key, 0)
}

// SecretKeys lists the keys of the secrets matching filter.
func (s *Store) SecretKeys(ctx context.Context, filter string) ([]string, error) {
	return Keys(ctx, s.kvs[Secrets], filter)
}
