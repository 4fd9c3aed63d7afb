"""WebTransport server for the Firefox STOP_SENDING repro (README.md): answers each
bidirectional stream with three chunks and a FIN; "stopfirst" / "stopafter" in the
client's first bytes add a STOP_SENDING before the answer / after its FIN."""
import asyncio, datetime, hashlib, ipaddress, os, sys, tempfile
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from aioquic.asyncio import serve, QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent

# The certificate, its key and its hash go to a temporary folder the client reads.
OUT = os.path.join(tempfile.gettempdir(), 'firefox-stop-sending')
os.makedirs(OUT, exist_ok=True)
key = ec.generate_private_key(ec.SECP256R1())
now = datetime.datetime.now(datetime.timezone.utc)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'localhost')])
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName('localhost'), x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]), False)
        .sign(key, hashes.SHA256()))
open(os.path.join(OUT, 'cert.pem'), 'wb').write(cert.public_bytes(serialization.Encoding.PEM))
open(os.path.join(OUT, 'key.pem'), 'wb').write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
open(os.path.join(OUT, 'hash.txt'), 'w').write(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest())

class P(QuicConnectionProtocol):
    def __init__(self, *a, **k):
        super().__init__(*a, **k); self.h3 = None; self.seen = set()
    def quic_event_received(self, event: QuicEvent):
        if isinstance(event, ProtocolNegotiated):
            self.h3 = H3Connection(self._quic, enable_webtransport=True)
        if self.h3:
            for e in self.h3.handle_event(event): self.h3_event(e)
    def h3_event(self, e):
        if isinstance(e, HeadersReceived):
            h = dict(e.headers)
            if h.get(b':method') == b'CONNECT':
                self.h3.send_headers(e.stream_id, [(b':status', b'200'), (b'sec-webtransport-http3-draft', b'draft02')])
                self.transmit()
        elif isinstance(e, WebTransportStreamDataReceived):
            print('server got', e.stream_id, e.data, e.stream_ended, flush=True)
            if e.stream_id not in self.seen:
                self.seen.add(e.stream_id)
                asyncio.ensure_future(self.answer(e.stream_id, e.data.decode(errors='replace')))
    async def answer(self, sid, mode):
        mode = mode.strip()
        if 'stopfirst' in mode:
            self._quic.stop_stream(sid, 0); self.transmit()
        for i in range(3):
            self._quic.send_stream_data(sid, f'chunk{i};'.encode(), end_stream=False); self.transmit()
            await asyncio.sleep(0.2)
        self._quic.send_stream_data(sid, b'END', end_stream=True); self.transmit()
        if 'stopafter' in mode:
            self._quic.stop_stream(sid, 0); self.transmit()
        print('server answered', sid, mode, flush=True)

async def main():
    cfg = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
    cfg.load_cert_chain(os.path.join(OUT, 'cert.pem'), os.path.join(OUT, 'key.pem'))
    await serve('127.0.0.1', int(sys.argv[1]), configuration=cfg, create_protocol=P)
    print('listening', flush=True)
    await asyncio.Future()
asyncio.run(main())
