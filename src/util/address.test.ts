import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { addressKey } from './address.js'

describe('addressKey', () => {
  const cases: Array<[name: string, ip: string, key: string]> = [
    ['keeps an IPv4 address', '192.0.2.7', '192.0.2.7'],
    ['keeps loopback IPv4', '127.0.0.1', '127.0.0.1'],
    ['maps an IPv4-mapped IPv6 address to IPv4', '::ffff:192.0.2.7', '192.0.2.7'],
    ['maps the upper-case mapped form', '::FFFF:10.1.2.3', '10.1.2.3'],
    ['maps the hex mapped form', '::ffff:c000:0207', '192.0.2.7'],
    ['maps the fully written mapped form', '0:0:0:0:0:ffff:192.0.2.7', '192.0.2.7'],
    ['groups IPv6 by its /64', '2001:db8:1:2::5', '2001:db8:1:2::/64'],
    [
      'puts another host of the same /64 in the same group',
      '2001:0db8:0001:0002:ffff:ffff:ffff:ffff',
      '2001:db8:1:2::/64',
    ],
    ['keeps a neighbouring /64 apart', '2001:db8:1:3::5', '2001:db8:1:3::/64'],
    ['expands :: inside the prefix', '2001:db8::1', '2001:db8:0:0::/64'],
    ['treats IPv6 loopback as its /64', '::1', '0:0:0:0::/64'],
    ['drops a zone index', 'fe80::1%eth0', 'fe80:0:0:0::/64'],
    [
      'does not map an IPv4-compatible-looking address that is not ::ffff',
      '::fffe:192.0.2.7',
      '0:0:0:0::/64',
    ],
    ['keeps what is not an address', 'unknown', 'unknown'],
    ['keeps an empty string', '', ''],
  ]
  for (const [name, ip, key] of cases) it(name, () => assert.equal(addressKey(ip), key))

  it('gives every address of one /64 one key and a different /64 another', () => {
    const keys = new Set(
      ['2001:db8:aa:bb::1', '2001:db8:aa:bb:1:2:3:4', '2001:db8:aa:bb:ffff::'].map(addressKey),
    )
    assert.equal(keys.size, 1)
    assert.notEqual(addressKey('2001:db8:aa:bc::1'), addressKey('2001:db8:aa:bb::1'))
  })
})
