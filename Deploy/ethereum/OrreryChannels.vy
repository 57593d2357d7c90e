# pragma version ~=0.4.3
"""
@title Orrery payment channels — peer-to-peer, non-custodial settlement of one compute contract
@notice The consumer (payer) locks NTX for one contract in a channel naming the device owner (payee) and a signer —
        the settlement gateway acting as the consumer's delegate, capped by the deposit. As receipts are proven, the
        signer hands out cumulative EIP-712 vouchers `Voucher(bytes32 channel, uint256 amount)`; the payee redeems the
        highest one (any time before the payer reclaims); after expiry the payer reclaims what was not redeemed.
        Nobody but the payee can take the payee's share, and nobody but the payer the rest.
"""

interface ERC20:
    def transferFrom(sender: address, receiver: address, amount: uint256) -> bool: nonpayable
    def transfer(receiver: address, amount: uint256) -> bool: nonpayable

struct Channel:
    payer: address
    payee: address
    signer: address
    deposit: uint256
    paid: uint256
    expiry: uint256
    closed: bool

event Opened:
    channel: indexed(bytes32)
    payer: indexed(address)
    payee: indexed(address)
    signer: address
    deposit: uint256
    expiry: uint256

event Redeemed:
    channel: indexed(bytes32)
    amount: uint256
    total: uint256

event Reclaimed:
    channel: indexed(bytes32)
    amount: uint256

TOKEN: public(immutable(address))
channels: public(HashMap[bytes32, Channel])

DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
VOUCHER_TYPEHASH: constant(bytes32) = keccak256("Voucher(bytes32 channel,uint256 amount)")
# secp256k1's n / 2: signatures with a larger s are the malleable twin and refused.
HALF_ORDER: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168


@deploy
def __init__(token: address):
    TOKEN = token


@external
def open(channel: bytes32, payee: address, signer: address, deposit: uint256, expiry: uint256):
    assert self.channels[channel].payer == empty(address), "the channel exists"
    assert payee != empty(address) and signer != empty(address), "payee and signer are required"
    assert deposit > 0, "the deposit must be positive"
    assert expiry > block.timestamp, "the expiry must be in the future"
    self.channels[channel] = Channel(
        payer=msg.sender, payee=payee, signer=signer, deposit=deposit, paid=0, expiry=expiry, closed=False
    )
    assert extcall ERC20(TOKEN).transferFrom(msg.sender, self, deposit), "the deposit did not transfer"
    log Opened(channel=channel, payer=msg.sender, payee=payee, signer=signer, deposit=deposit, expiry=expiry)


@view
@external
def voucherDigest(channel: bytes32, amount: uint256) -> bytes32:
    return self._digest(channel, amount)


@view
@internal
def _digest(channel: bytes32, amount: uint256) -> bytes32:
    domain: bytes32 = keccak256(
        abi_encode(DOMAIN_TYPEHASH, keccak256("Orrery Channels"), keccak256("1"), chain.id, self)
    )
    voucher: bytes32 = keccak256(abi_encode(VOUCHER_TYPEHASH, channel, amount))
    return keccak256(concat(b"\x19\x01", domain, voucher))


@external
def redeem(channel: bytes32, amount: uint256, signature: Bytes[65]):
    c: Channel = self.channels[channel]
    assert msg.sender == c.payee, "only the payee redeems"
    assert not c.closed, "the channel is closed"
    assert amount <= c.deposit, "the voucher exceeds the deposit"
    assert amount > c.paid, "the voucher is not above what was paid"
    r: uint256 = extract32(signature, 0, output_type=uint256)
    s: uint256 = extract32(signature, 32, output_type=uint256)
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    assert s <= HALF_ORDER, "malleable signature"
    assert ecrecover(self._digest(channel, amount), v, r, s) == c.signer, "not signed by the channel's signer"
    self.channels[channel].paid = amount
    assert extcall ERC20(TOKEN).transfer(c.payee, amount - c.paid), "the payment did not transfer"
    log Redeemed(channel=channel, amount=amount - c.paid, total=amount)


@external
def reclaim(channel: bytes32):
    c: Channel = self.channels[channel]
    assert msg.sender == c.payer, "only the payer reclaims"
    assert block.timestamp >= c.expiry, "the channel has not expired"
    assert not c.closed, "the channel is closed"
    self.channels[channel].closed = True
    rest: uint256 = c.deposit - c.paid
    if rest > 0:
        assert extcall ERC20(TOKEN).transfer(c.payer, rest), "the refund did not transfer"
    log Reclaimed(channel=channel, amount=rest)
