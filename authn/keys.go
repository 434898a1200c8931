package authn

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// minRSABits is the smallest RSA modulus accepted, per NIST SP 800-131A.
const minRSABits = 2048

type algFamily uint8

const (
	famHMAC algFamily = iota + 1
	famRSA            // RS* and PS*
	famECDSA
	famEdDSA
)

type algInfo struct {
	family algFamily
	curve  elliptic.Curve // ECDSA only
	minKey int            // HMAC only: RFC 7518 §3.2 key size
}

// algs lists the JWS algorithms the package verifies. "none" is absent on
// purpose and refused everywhere.
var algs = map[string]algInfo{
	"HS256": {family: famHMAC, minKey: 32},
	"HS384": {family: famHMAC, minKey: 48},
	"HS512": {family: famHMAC, minKey: 64},
	"RS256": {family: famRSA},
	"RS384": {family: famRSA},
	"RS512": {family: famRSA},
	"PS256": {family: famRSA},
	"PS384": {family: famRSA},
	"PS512": {family: famRSA},
	"ES256": {family: famECDSA, curve: elliptic.P256()},
	"ES384": {family: famECDSA, curve: elliptic.P384()},
	"ES512": {family: famECDSA, curve: elliptic.P521()},
	"EdDSA": {family: famEdDSA},
}

// keyFits reports whether key may verify alg. It is what stops an HMAC
// algorithm from being verified with public key bytes and an RSA key from
// verifying an ES256 token.
func keyFits(alg string, key any) bool {
	info, ok := algs[alg]
	if !ok {
		return false
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		return info.family == famRSA && k.N != nil && k.N.BitLen() >= minRSABits
	case *ecdsa.PublicKey:
		return info.family == famECDSA && k.Curve == info.curve
	case ed25519.PublicKey:
		return info.family == famEdDSA && len(k) == ed25519.PublicKeySize
	}
	return false
}

// checkPublicKey accepts the public key types JWS verification uses.
func checkPublicKey(key crypto.PublicKey) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil || k.N.BitLen() < minRSABits {
			return fmt.Errorf("%w: RSA keys must have at least %d bits", ErrInvalidKey, minRSABits)
		}
	case *ecdsa.PublicKey:
		if k == nil || (k.Curve != elliptic.P256() && k.Curve != elliptic.P384() && k.Curve != elliptic.P521()) {
			return fmt.Errorf("%w: ECDSA keys must use P-256, P-384 or P-521", ErrInvalidKey)
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: Ed25519 key has %d bytes", ErrInvalidKey, len(k))
		}
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
		return fmt.Errorf("%w: a private key was given where a public key is expected", ErrInvalidKey)
	default:
		return fmt.Errorf("%w: unsupported key type %T", ErrInvalidKey, key)
	}
	return nil
}

// ParsePublicKeyPEM parses the first PEM block of data as an RSA, ECDSA or
// Ed25519 public key: "PUBLIC KEY" (PKIX), "RSA PUBLIC KEY" (PKCS #1) or
// "CERTIFICATE" (the certificate's key; its validity is not checked). Private
// keys are refused so that they do not end up in gateway configuration. RSA
// keys need at least 2048 bits.
func ParsePublicKeyPEM(data []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found", ErrInvalidKey)
	}
	var (
		key crypto.PublicKey
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("%w: PEM block %q holds a private key; give the public key", ErrInvalidKey, block.Type)
	default:
		return nil, fmt.Errorf("%w: unsupported PEM block type %q", ErrInvalidKey, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	if err := checkPublicKey(key); err != nil {
		return nil, err
	}
	return key, nil
}
