package authn

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"
)

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestParsePublicKeyPEM(t *testing.T) {
	spki := func(k crypto.PublicKey) []byte {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "idp"}, NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ecKey().Public(), ecKey())
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	small := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 1023), E: 65537}
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(edKey())

	tests := []struct {
		name    string
		in      []byte
		want    crypto.PublicKey // nil: error expected
		wantErr error
	}{
		{"RSA PKIX", pemOf("PUBLIC KEY", spki(&rsaKey().PublicKey)), &rsaKey().PublicKey, nil},
		{"RSA PKCS1", pemOf("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey().PublicKey)), &rsaKey().PublicKey, nil},
		{"ECDSA P-256", pemOf("PUBLIC KEY", spki(ecKey().Public())), ecKey().Public(), nil},
		{"ECDSA P-384", pemOf("PUBLIC KEY", spki(p384.Public())), p384.Public(), nil},
		{"Ed25519", pemOf("PUBLIC KEY", spki(edKey().Public())), edKey().Public(), nil},
		{"certificate", pemOf("CERTIFICATE", certDER), ecKey().Public(), nil},
		{"private key refused", pemOf("PRIVATE KEY", pkcs8), nil, ErrInvalidKey},
		{"small RSA refused", pemOf("PUBLIC KEY", spki(small)), nil, ErrInvalidKey},
		{"P-224 refused", pemOf("PUBLIC KEY", spki(p224.Public())), nil, ErrInvalidKey},
		{"not PEM", []byte("ssh-ed25519 AAAA"), nil, ErrInvalidKey},
		{"garbage DER", pemOf("PUBLIC KEY", []byte{1, 2, 3}), nil, ErrInvalidKey},
		{"unknown block", pemOf("OPENSSH PRIVATE KEY", []byte{1}), nil, ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePublicKeyPEM(tt.in)
			if tt.want == nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("ParsePublicKeyPEM() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePublicKeyPEM() error = %v", err)
			}
			if eq, ok := got.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(tt.want) {
				t.Errorf("ParsePublicKeyPEM() = %T, want the input key", got)
			}
		})
	}
}

func TestKeyFits(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tests := []struct {
		alg  string
		key  any
		want bool
	}{
		{"RS256", &rsaKey().PublicKey, true},
		{"PS512", &rsaKey().PublicKey, true},
		{"ES256", ecKey().Public(), true},
		{"ES384", ecKey().Public(), false}, // curve mismatch
		{"ES384", p384.Public(), true},
		{"EdDSA", edKey().Public(), true},
		{"EdDSA", ed25519.PublicKey(make([]byte, 5)), false},
		{"RS256", ecKey().Public(), false},
		{"HS256", &rsaKey().PublicKey, false},
		{"HS256", rsaPublicPEM(t), false},
		{"none", &rsaKey().PublicKey, false},
		{"RS256", &rsa.PublicKey{N: big.NewInt(3233), E: 17}, false}, // too small
	}
	for _, tt := range tests {
		if got := keyFits(tt.alg, tt.key); got != tt.want {
			t.Errorf("keyFits(%s, %T) = %v, want %v", tt.alg, tt.key, got, tt.want)
		}
	}
}
