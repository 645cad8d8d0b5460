//! TLS 1.3 for QUIC with certificates bound to peer keys, and the swarm-secret proof.
//!
//! Invariants:
//! - both sides present a certificate; it is accepted only if its subject public key is an
//!   ed25519 key, and that key *is* the peer's [`PeerId`]. Possession of the private key is
//!   proven by the TLS 1.3 `CertificateVerify` signature, which is checked against that key, so a
//!   peer cannot claim another's id. Chains, names and dates carry no meaning here and are not
//!   checked.
//! - a dialer that names the peer it expects (the TLS server name is the peer id's text form)
//!   refuses any other key; a dial by bare address ([`ANY_PEER`]) accepts any bound key.
//! - only TLS 1.3, only the `ring` provider, only ALPN [`ALPN`].

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use shoal_core::ids::PeerId;

use crate::identity::Identity;

/// The application protocol of this build (major version in the name).
pub const ALPN: &[u8] = b"shoal/1";

/// TLS server name used when dialling an address whose peer is not known yet.
pub const ANY_PEER: &str = "any.shoal";

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (33 bytes, 0 unused bits) }, followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// Why TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// QUIC needs a TLS 1.3 cipher suite the provider lacks.
    #[error("no TLS 1.3 initial cipher suite for QUIC")]
    NoInitialCipherSuite,
}

/// The peer id a certificate is bound to: the certificate's ed25519 public key.
pub fn peer_id_of_cert(cert: &CertificateDer<'_>) -> Result<PeerId, rustls::Error> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
    let spki = parsed.subject_public_key_info();
    let bytes: &[u8] = spki.as_ref();
    match bytes.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(key) => {
            let key: [u8; 32] = key.try_into().map_err(|_| bad_cert("ed25519 key is not 32 bytes"))?;
            Ok(PeerId(key))
        }
        None => Err(bad_cert("certificate key is not ed25519, so it cannot be a peer id")),
    }
}

fn bad_cert(why: &'static str) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(
        CertBindingError(why),
    ))))
}

/// A certificate that does not bind a peer id.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CertBindingError(&'static str);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

fn verify13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
}

/// Server side: requires a client certificate bound to an ed25519 key.
#[derive(Debug)]
struct PeerClientVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PeerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        peer_id_of_cert(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify13(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Client side: the server's certificate must be bound to the expected peer id (or any id for
/// [`ANY_PEER`]).
#[derive(Debug)]
struct PeerServerVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = peer_id_of_cert(end_entity)?;
        let expected = match server_name {
            ServerName::DnsName(name) if name.as_ref() == ANY_PEER => None,
            ServerName::DnsName(name) => {
                Some(name.as_ref().parse::<PeerId>().map_err(|_| bad_cert("dialled name is not a peer id"))?)
            }
            _ => return Err(bad_cert("dialled name is not a peer id")),
        };
        match expected {
            Some(want) if want != actual => Err(bad_cert("peer presented a different peer id than dialled")),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify13(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The rustls server configuration for `id` (TLS 1.3, mandatory bound client certs, ALPN).
pub fn server_config(id: &Identity) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PeerClientVerifier { algs: algorithms() }))
        .with_single_cert(vec![id.cert()], id.private_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The rustls client configuration for `id`, offering the given ALPN list (normally `[ALPN]`).
pub fn client_config_with_alpn(id: &Identity, alpn: Vec<Vec<u8>>) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerServerVerifier { algs: algorithms() }))
        .with_client_auth_cert(vec![id.cert()], id.private_key())?;
    cfg.alpn_protocols = alpn;
    Ok(cfg)
}

/// The rustls client configuration for `id`.
pub fn client_config(id: &Identity) -> Result<rustls::ClientConfig, TlsError> {
    client_config_with_alpn(id, vec![ALPN.to_vec()])
}

/// The peer id of an established quinn connection (from its verified certificate).
pub fn peer_id_of_connection(conn: &quinn::Connection) -> Option<PeerId> {
    let certs = conn.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    peer_id_of_cert(certs.first()?).ok()
}

/// The negotiated ALPN of an established connection.
pub fn alpn_of_connection(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let data = conn.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?;
    data.protocol
}

/// Label for the swarm-secret keying material export (RFC 5705 style).
const EKM_LABEL: &[u8] = b"EXPORTER-shoal/1 swarm secret";

/// Which end of a connection computes a proof (so a proof cannot be reflected back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that dialled.
    Dialer,
    /// The side that accepted.
    Acceptor,
}

/// A swarm secret: only peers that know it can join. Never sent; each side proves knowledge
/// with a MAC over keying material exported from this very TLS session, so a proof is worthless
/// on any other connection.
#[derive(Clone)]
pub struct SwarmSecret {
    key: [u8; 32],
}

impl std::fmt::Debug for SwarmSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SwarmSecret(..)")
    }
}

impl SwarmSecret {
    /// A secret from any bytes (e.g. a passphrase); it is stretched into a MAC key.
    pub fn new(secret: &[u8]) -> Self {
        SwarmSecret { key: blake3::derive_key("shoal swarm secret v1", secret) }
    }

    /// Two bytes derived from the secret, advertised by mDNS discovery so that peers of another
    /// swarm on the same LAN are skipped without a handshake. Only 16 bits, so that a listener
    /// who tests guessed passphrases against it is left with many candidates.
    pub(crate) fn discovery_tag(&self) -> [u8; 2] {
        let d = blake3::derive_key("shoal mdns swarm tag v1", &self.key);
        [d[0], d[1]]
    }

    /// The proof that `role` knows the secret on `conn`.
    pub fn proof(&self, conn: &quinn::Connection, role: Role) -> Option<[u8; 32]> {
        let mut ekm = [0u8; 32];
        conn.export_keying_material(&mut ekm, EKM_LABEL, b"").ok()?;
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(&ekm);
        mac.update(match role {
            Role::Dialer => b"dialer",
            Role::Acceptor => b"acceptor",
        });
        Some(*mac.finalize().as_bytes())
    }

    /// Checks a proof in constant time.
    pub fn verify(&self, conn: &quinn::Connection, role: Role, proof: &[u8; 32]) -> bool {
        match self.proof(conn, role) {
            Some(want) => blake3::Hash::from(want) == blake3::Hash::from(*proof),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ed25519_certificates_bind_a_peer_id() {
        let id = Identity::ephemeral().unwrap();
        assert_eq!(peer_id_of_cert(&id.cert()).unwrap(), id.peer_id());
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        assert!(peer_id_of_cert(other.cert.der()).is_err(), "an ECDSA cert must not bind an id");
        assert!(peer_id_of_cert(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
    }
}
