// The control channel's handler (gateway/control/handler.h) with a recording SubjectRights, an
// in-memory nonce memory and audit log, and a test clock: every refusal reason, the audit-first
// rule, the sealed export, and no identifier in any audit entry or result.
#include <catch2/catch.hpp>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "control.pb.h"
#include "vern/config/config.h"
#include "vern/control/handler.h"
#include "vern/crypto/keyring.h"

using namespace vern;
namespace v1 = vern::control::v1;

namespace {

const std::string secret_customer = "70012345";
constexpr std::int64_t t0 = 1'800'000'000'000;

std::array<std::uint8_t, 32> master() {
    std::array<std::uint8_t, 32> m{};
    for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<std::uint8_t>(3 * i + 1);
    return m;
}

class FakeRights : public pipeline::SubjectRights {
public:
    std::vector<std::string> seen;
    pipeline::RightsOutcome ok(const pipeline::SubjectRef& s, std::string what,
                               std::string json = "{}") {
        seen.push_back(what + " " + s.kind + " " + s.identifier);
        return pipeline::RightsOutcome{"id-of-" + s.kind, 3, std::move(json)};
    }
    Result<pipeline::RightsOutcome, pipeline::RightsError> export_subject(
        const pipeline::SubjectRef& s, const pipeline::Progress&) override {
        return ok(s, "export", "{\"customer\":\"" + s.identifier + "\"}");
    }
    Result<pipeline::RightsOutcome, pipeline::RightsError> erase(
        const pipeline::SubjectRef& s) override {
        return ok(s, "erase");
    }
    Result<pipeline::RightsOutcome, pipeline::RightsError> restrict(const pipeline::SubjectRef& s,
                                                                    bool on) override {
        return ok(s, on ? "restrict" : "unrestrict");
    }
    Result<pipeline::RightsOutcome, pipeline::RightsError> object(const pipeline::SubjectRef& s,
                                                                  std::string_view purpose,
                                                                  bool on) override {
        return ok(s, std::string(on ? "object " : "unobject ") + std::string(purpose));
    }
    Result<pipeline::RightsOutcome, pipeline::RightsError> rectify(const pipeline::SubjectRef& s,
                                                                   std::string_view,
                                                                   std::string_view) override {
        return ok(s, "rectify");
    }
};

struct Rig {
    config::Config config;
    std::unique_ptr<crypto::Keyring> ring = crypto::Keyring::from_master(master());
    crypto::ControlKeys keys = ring->control_keys();
    crypto::TestKeyPair controller_sign = crypto::test_sign_key_pair();
    crypto::TestKeyPair controller_box = crypto::test_box_key_pair();
    Counters counters;
    FakeRights rights;
    std::vector<control::AuditRecord> audit;
    bool audit_works = true;
    std::map<std::string, std::int64_t> nonces;
    std::optional<std::int64_t> now = t0;
    std::unique_ptr<control::Handler> handler;

    Rig() {
        config.gateway.id = "gw-1";
        config.control.enabled = true;
        config.control.sign_public_key = crypto::to_hex(controller_sign.public_key);
        config.control.box_public_key = crypto::to_hex(controller_box.public_key);
        config.control.max_validity_s = 3600;
        control::HandlerLinks links;
        links.rights = &rights;
        links.audit = [this](const control::AuditRecord& r) {
            if (!audit_works) return false;
            audit.push_back(r);
            return true;
        };
        links.nonce = [this](std::string_view n, std::int64_t expires, std::int64_t at) {
            auto it = nonces.find(std::string(n));
            if (it != nonces.end() && it->second > at) return control::NonceVerdict::seen;
            nonces[std::string(n)] = expires;
            return control::NonceVerdict::fresh;
        };
        links.now = [this] { return now; };
        links.subject_id = [this](std::string_view kind, std::string_view id) {
            return kind == "customer_number"
                       ? ring->subject_id(crypto::SubjectKind::customer_number, id)
                       : std::string();
        };
        handler = std::make_unique<control::Handler>(config, keys, counters, std::move(links));
    }

    v1::Command command(v1::Action action, const std::string& nonce_fill = "a") {
        v1::Command c;
        c.set_version(1);
        c.set_gateway("gw-1");
        c.set_request_id("REQ-2026-0001");
        c.set_received_date("2026-11-30");
        std::string nonce(16, nonce_fill[0]);
        c.set_nonce(nonce);
        c.set_issued_ms(t0 - 1000);
        c.set_expires_ms(t0 + 600'000);
        c.set_action(action);
        v1::Subject s;
        s.set_kind("customer_number");
        s.set_identifier(secret_customer);
        c.set_sealed_subject(crypto::seal_to(keys.box_public_key(), s.SerializeAsString()));
        return c;
    }
    std::string sign(const v1::Command& c) {
        v1::SignedCommand sc;
        sc.set_command(c.SerializeAsString());
        sc.set_signature(
            crypto::test_sign(controller_sign.secret_key, crypto::command_domain, sc.command()));
        return sc.SerializeAsString();
    }
    // Handles and checks the result's signature with the gateway's public key.
    std::optional<v1::Result> send(const std::string& payload) {
        auto out = handler->handle(payload);
        if (!out) return std::nullopt;
        v1::SignedResult sr;
        REQUIRE(sr.ParseFromString(*out));
        REQUIRE(crypto::verify_signed(keys.sign_public_key(), crypto::result_domain, sr.result(),
                                      sr.signature()));
        v1::Result r;
        REQUIRE(r.ParseFromString(sr.result()));
        CHECK(sr.SerializeAsString().find(secret_customer) == std::string::npos);
        return r;
    }
    std::uint64_t counter(const std::string& name) { return counters.get(name).get(); }
    bool no_identifier_in_audit() const {
        for (const auto& r : audit) {
            for (const auto* f : {&r.action, &r.subject_id, &r.outcome, &r.request_id}) {
                if (f->find(secret_customer) != std::string::npos) return false;
            }
        }
        return true;
    }
};

}  // namespace

TEST_CASE("A signed erase command is audited with its request, carried out and answered signed") {
    Rig rig;
    auto r = rig.send(rig.sign(rig.command(v1::ERASE)));
    REQUIRE(r);
    CHECK(r->status() == v1::Result::OK);
    CHECK(r->request_id() == "REQ-2026-0001");
    CHECK(r->gateway() == "gw-1");
    CHECK(r->records() == 3);
    CHECK(r->nonce() == std::string(16, 'a'));
    const std::string subject_id =
        rig.ring->subject_id(crypto::SubjectKind::customer_number, secret_customer);
    CHECK(r->subject_id() == subject_id);
    REQUIRE(rig.rights.seen.size() == 1);
    CHECK(rig.rights.seen[0] == "erase customer_number " + secret_customer);
    REQUIRE(rig.audit.size() == 2);
    CHECK(rig.audit[0].action == "control.erase");
    CHECK(rig.audit[0].outcome == "requested");
    CHECK(rig.audit[0].request_id == "REQ-2026-0001");
    CHECK(rig.audit[0].received_date == "2026-11-30");
    CHECK(rig.audit[0].subject_id == subject_id);
    CHECK(rig.audit[1].outcome == "ok: 3 records");
    CHECK(rig.counter("control_commands") == 1);
    CHECK(rig.counter("control_done") == 1);
    CHECK(rig.no_identifier_in_audit());
}

TEST_CASE("An export is sealed to the controller's box key and opens with no other key") {
    Rig rig;
    auto r = rig.send(rig.sign(rig.command(v1::EXPORT)));
    REQUIRE(r);
    REQUIRE(r->status() == v1::Result::OK);
    CHECK(r->sealed_export().find(secret_customer) == std::string::npos);
    auto opened = crypto::test_open_sealed(rig.controller_box, r->sealed_export());
    REQUIRE(opened);
    CHECK(opened->find(secret_customer) != std::string::npos);
    CHECK_FALSE(crypto::test_open_sealed(crypto::test_box_key_pair(), r->sealed_export()));
}

TEST_CASE("A forged or tampered command gets no answer, is counted and audited, and is not done") {
    Rig rig;
    const std::string good = rig.sign(rig.command(v1::ERASE));
    // Signed by someone else.
    v1::SignedCommand forged;
    forged.set_command(rig.command(v1::ERASE).SerializeAsString());
    forged.set_signature(crypto::test_sign(crypto::test_sign_key_pair().secret_key,
                                           crypto::command_domain, forged.command()));
    CHECK_FALSE(rig.send(forged.SerializeAsString()));
    // Every byte of the signed command flipped in turn (command bytes and signature).
    v1::SignedCommand parsed;
    REQUIRE(parsed.ParseFromString(good));
    std::size_t tried = 0;
    for (std::size_t i = 0; i < parsed.command().size(); i += 5) {
        v1::SignedCommand t = parsed;
        (*t.mutable_command())[i] = static_cast<char>(t.command()[i] ^ 0x01);
        CHECK_FALSE(rig.send(t.SerializeAsString()));
        ++tried;
    }
    v1::SignedCommand bad_sig = parsed;
    (*bad_sig.mutable_signature())[10] ^= 0x40;
    CHECK_FALSE(rig.send(bad_sig.SerializeAsString()));
    CHECK_FALSE(rig.send(good.substr(0, good.size() - 1)));  // truncated
    CHECK_FALSE(rig.send("not a protobuf at all"));
    // Signed as a result (another domain) is not a command.
    v1::SignedCommand wrong_domain;
    wrong_domain.set_command(parsed.command());
    wrong_domain.set_signature(
        crypto::test_sign(rig.controller_sign.secret_key, crypto::result_domain, parsed.command()));
    CHECK_FALSE(rig.send(wrong_domain.SerializeAsString()));
    CHECK(rig.rights.seen.empty());
    CHECK(rig.counter("control_refused_signature") == tried + 5);
    REQUIRE(rig.audit.size() == tried + 5);
    CHECK(rig.audit[0].action == "control.refused");
    CHECK(rig.audit[0].outcome == "bad_signature");
    CHECK(rig.audit[0].request_id.empty());
    // The untouched command still works.
    CHECK(rig.send(good)->status() == v1::Result::OK);
}

TEST_CASE("A replayed command is refused and counted, the first is done once") {
    Rig rig;
    const std::string cmd = rig.sign(rig.command(v1::ERASE));
    CHECK(rig.send(cmd)->status() == v1::Result::OK);
    auto again = rig.send(cmd);
    REQUIRE(again);
    CHECK(again->status() == v1::Result::REFUSED_REPLAY);
    CHECK(rig.rights.seen.size() == 1);
    CHECK(rig.counter("control_refused_replay") == 1);
    CHECK(rig.audit.back().action == "control.refused");
    CHECK(rig.audit.back().outcome == "replay:erase");
    CHECK(rig.audit.back().request_id == "REQ-2026-0001");
}

TEST_CASE("Expired, too long valid, foreign and malformed commands are refused by reason") {
    Rig rig;
    auto expect = [&](v1::Command c, v1::Result::Status status, const char* counter) {
        INFO(counter);
        auto r = rig.send(rig.sign(c));
        REQUIRE(r);
        CHECK(r->status() == status);
        CHECK(rig.counter(counter) >= 1);
    };
    auto c = rig.command(v1::ERASE, "b");
    c.set_expires_ms(t0 - 1);
    expect(c, v1::Result::REFUSED_EXPIRED, "control_refused_expired");
    c = rig.command(v1::ERASE, "c");
    c.set_expires_ms(c.issued_ms() + 3600'000 + 1);
    expect(c, v1::Result::REFUSED_EXPIRED, "control_refused_expired");
    c = rig.command(v1::ERASE, "d");
    c.set_gateway("gw-2");
    expect(c, v1::Result::REFUSED_GATEWAY, "control_refused_gateway");
    c = rig.command(v1::ERASE, "e");
    c.set_version(2);
    expect(c, v1::Result::REFUSED_UNKNOWN, "control_refused_unknown");
    c = rig.command(v1::ERASE, "f");
    c.set_request_id("has space");
    expect(c, v1::Result::REFUSED_UNKNOWN, "control_refused_unknown");
    c = rig.command(v1::ERASE, "g");
    c.set_received_date("2026-13-01");
    expect(c, v1::Result::REFUSED_UNKNOWN, "control_refused_unknown");
    c = rig.command(v1::ERASE, "h");
    c.set_nonce("short");
    expect(c, v1::Result::REFUSED_UNKNOWN, "control_refused_unknown");
    c = rig.command(v1::OBJECT, "i");
    c.set_purpose("no-such-purpose");
    expect(c, v1::Result::REFUSED_UNKNOWN, "control_refused_unknown");
    c = rig.command(v1::ERASE, "j");
    c.set_sealed_subject(crypto::seal_to(crypto::test_box_key_pair().public_key, "x"));
    expect(c, v1::Result::REFUSED_SUBJECT, "control_refused_subject");
    c = rig.command(v1::ERASE, "k");
    c.set_action(static_cast<v1::Action>(99));
    expect(c, v1::Result::REFUSED_UNKNOWN, "control_refused_unknown");
    rig.now.reset();  // the gateway's clock is not trusted
    expect(rig.command(v1::ERASE, "l"), v1::Result::REFUSED_EXPIRED, "control_refused_expired");
    CHECK(rig.rights.seen.empty());
    CHECK(rig.counter("control_refused_expired") == 3);
    CHECK(rig.counter("control_refused_unknown") == 6);
    CHECK(rig.no_identifier_in_audit());
    // A refused foreign command left no nonce behind to block the real one.
    CHECK(rig.nonces.count(std::string(16, 'd')) == 0);
}

TEST_CASE("A command the audit log cannot record is not carried out") {
    Rig rig;
    rig.audit_works = false;
    auto r = rig.send(rig.sign(rig.command(v1::ERASE)));
    REQUIRE(r);
    CHECK(r->status() == v1::Result::FAILED);
    CHECK(rig.rights.seen.empty());
    CHECK(rig.counter("control_failed") == 1);
}

TEST_CASE("Object and consent commands name a configured purpose and reach the rights") {
    Rig rig;
    const std::string purpose = rig.config.policy.purposes.at(0).name;
    auto c = rig.command(v1::OBJECT, "m");
    c.set_purpose(purpose);
    CHECK(rig.send(rig.sign(c))->status() == v1::Result::OK);
    CHECK(rig.rights.seen.back() == "object " + purpose + " customer_number " + secret_customer);
    c = rig.command(v1::CONSENT_GRANT, "n");
    c.set_purpose(purpose);
    auto r = rig.send(rig.sign(c));
    REQUIRE(r);
    // The default SubjectRights::consent is unavailable: a FAILED result, audited as such.
    CHECK(r->status() == v1::Result::FAILED);
    CHECK(rig.audit.back().action == "control.consent-grant purpose=" + purpose);
    CHECK(rig.audit.back().outcome == "error:unavailable");
}
