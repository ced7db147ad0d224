#!/usr/bin/python3
# Captures what RabbitMQ sends to a client in a short session, for the
# replay tests in tests/amqp_connection_test.cpp.  The client side is
# encoded by python3-pika's spec module; only the server's bytes are kept,
# in three segments: the handshake, the session, and the close.
#   /usr/bin/python3 tests/vectors/capture_rabbitmq_session.py PORT > tests/vectors/rabbitmq_session.inc
#
# Session (the test issues the same requests):
#   handshake: start / start-ok, tune / tune-ok (2047, 4096, 30), open "/"
#   channel 1: open, confirm.select, queue.declare "" exclusive auto-delete,
#     queue.bind to amq.topic "cap.#", basic.qos 10, publish "hello" (all
#     properties) to cap.x, publish 10000 bytes (i % 251) to cap.big
#     (three body frames at frame_max 4096), publish
#     mandatory "lost" to amq.topic "nowhere", basic.consume "ctag1"
#   channel 2: open, queue.declare passive "no-such-queue" -> channel.close 404
#   close: connection.close 200 -> close-ok
import socket, sys
import pika.spec as s
import pika.frame as f
from pika.spec import BasicProperties

port = int(sys.argv[1])
sock = socket.create_connection(('127.0.0.1', port))
buf = b''
segment = b''

def send(ch, m):
    sock.sendall(f.Method(ch, m).marshal())

def publish(ch, rk, body, props, mandatory=False):
    sock.sendall(f.Method(ch, s.Basic.Publish(exchange='amq.topic', routing_key=rk,
                                              mandatory=mandatory)).marshal())
    sock.sendall(f.Header(ch, len(body), props).marshal())
    for i in range(0, len(body), 4096 - 8):
        sock.sendall(f.Body(ch, body[i:i + 4096 - 8]).marshal())

def wait_for(*wanted):
    """Reads frames until methods of the given classes were all seen (in
    any order, each once); returns the matching method objects."""
    global buf, segment
    wanted = list(wanted)
    got = []
    while wanted:
        consumed, frame = f.decode_frame(buf)
        if not frame:
            data = sock.recv(65536)
            if not data:
                raise SystemExit('server closed the connection')
            buf += data
            continue
        segment += buf[:consumed]
        buf = buf[consumed:]
        if isinstance(frame, f.Method):
            for w in wanted:
                if isinstance(frame.method, w):
                    wanted.remove(w)
                    got.append(frame.method)
                    break
    return got

segments = []
sock.sendall(b'AMQP\x00\x00\x09\x01')
wait_for(s.Connection.Start)
send(0, s.Connection.StartOk(client_properties={'product': 'capture'}, mechanism='PLAIN',
                             response='\0guest\0guest', locale='en_US'))
wait_for(s.Connection.Tune)
send(0, s.Connection.TuneOk(2047, 4096, 30))
send(0, s.Connection.Open('/'))
wait_for(s.Connection.OpenOk)
segments.append(segment); segment = b''

send(1, s.Channel.Open())
wait_for(s.Channel.OpenOk)
send(1, s.Confirm.Select())
wait_for(s.Confirm.SelectOk)
send(1, s.Queue.Declare(queue='', exclusive=True, auto_delete=True))
(declare_ok,) = wait_for(s.Queue.DeclareOk)
q = declare_ok.queue
send(1, s.Queue.Bind(queue=q, exchange='amq.topic', routing_key='cap.#'))
wait_for(s.Queue.BindOk)
send(1, s.Basic.Qos(prefetch_count=10))
wait_for(s.Basic.QosOk)
props = BasicProperties(content_type='text/plain', content_encoding='utf-8',
    headers={'k': 'v', 'n': 1}, delivery_mode=1, priority=1, correlation_id='c1',
    reply_to='r', expiration='60000', message_id='m1', timestamp=1700000000,
    type='t', user_id='guest', app_id='capture', cluster_id='cl')
publish(1, 'cap.x', b'hello', props)
publish(1, 'cap.big', bytes(i % 251 for i in range(10000)), BasicProperties())
publish(1, 'nowhere', b'lost', BasicProperties(), mandatory=True)
wait_for(s.Basic.Return, s.Basic.Ack, s.Basic.Ack, s.Basic.Ack)
# Consuming only after publishing: this script reads nothing while it
# writes, so deliveries and a large publish could fill both socket buffers.
send(1, s.Basic.Consume(queue=q, consumer_tag='ctag1'))
wait_for(s.Basic.ConsumeOk, s.Basic.Deliver, s.Basic.Deliver)
send(2, s.Channel.Open())
wait_for(s.Channel.OpenOk)
send(2, s.Queue.Declare(queue='no-such-queue', passive=True))
wait_for(s.Channel.Close)
send(2, s.Channel.CloseOk())
segments.append(segment); segment = b''

send(0, s.Connection.Close(200, 'bye', 0, 0))
wait_for(s.Connection.CloseOk)
segments.append(segment)
sock.close()

print('// Server bytes of one session with RabbitMQ %s, captured on loopback by'
      % '3.10.8')
print('// tests/vectors/capture_rabbitmq_session.py: handshake, session, close.')
print('// The server-named queue is %s.' % q)
for seg in segments:
    print('"%s",' % seg.hex())
