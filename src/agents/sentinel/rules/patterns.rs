//! Pattern tables: concept sequences with their weights, and the chat-template delimiters.

use super::bitset::BitSet;
use super::concepts::C::*;
use super::concepts::Rule::*;
use super::concepts::{Rule, any_of, m};

/// One step of a pattern: any concept in `any`, at most `gap` words after the previous step.
#[derive(Clone, Copy)]
pub(super) struct Step {
    pub(super) any: BitSet,
    pub(super) gap: u8,
}

pub(super) const fn s(any: BitSet, gap: u8) -> Step {
    Step { any, gap }
}

/// An ordered concept sequence. `forbid` may not occur inside the match,
/// `not_before`/`not_after` may not be the word right before/after it.
/// Patterns sharing a nonzero `group` are one piece of evidence: counted once.
#[derive(Clone, Copy)]
pub(super) struct Pat {
    pub(super) rule: Rule,
    pub(super) weight: f32,
    pub(super) steps: &'static [Step],
    pub(super) forbid: BitSet,
    pub(super) not_before: BitSet,
    pub(super) not_after: BitSet,
    pub(super) group: u8,
}

pub(super) const fn p(rule: Rule, weight: f32, steps: &'static [Step]) -> Pat {
    Pat { rule, weight, steps, forbid: BitSet::EMPTY, not_before: BitSet::EMPTY, not_after: BitSet::EMPTY, group: 0 }
}

impl Pat {
    pub(super) const fn group(mut self, g: u8) -> Pat {
        self.group = g;
        self
    }
    pub(super) const fn forbid(mut self, c: BitSet) -> Pat {
        self.forbid = c;
        self
    }
    pub(super) const fn not_before(mut self, c: BitSet) -> Pat {
        self.not_before = c;
        self
    }
    pub(super) const fn not_after(mut self, c: BitSet) -> Pat {
        self.not_after = c;
        self
    }
}

const ALL_YOUR: BitSet = any_of(&[All, Your]);
const IGN: BitSet = m(Ignore);
const ASK: BitSet = any_of(&[Extract, WhatIs]);
const SECRET_DET: BitSet = m(Det);

#[rustfmt::skip]
pub(super) const PATTERNS: &[Pat] = &[
    // "ignore (all) previous instructions" and the same in other word orders. Not after "I",
    // "my" or a negation: "我忘记了之前的规则" (I forgot the earlier rules) reports, it does not order.
    p(InstructionOverride, 0.75, &[s(IGN, 0), s(m(Prior), 5), s(m(Instr), 3)]).forbid(m(My)).not_before(any_of(&[My, NegWord])),
    p(InstructionOverride, 0.75, &[s(IGN, 0), s(m(Instr), 3), s(m(Prior), 1)]).forbid(m(My)).not_before(any_of(&[My, NegWord])),
    p(InstructionOverride, 0.75, &[s(m(Prior), 0), s(m(Instr), 2), s(m(IgnorePost), 1)]),
    p(InstructionOverride, 0.65, &[s(IGN, 0), s(ALL_YOUR, 2), s(m(InstrCore), 4)]).forbid(m(My)).not_before(any_of(&[My, NegWord])),
    p(InstructionOverride, 0.65, &[s(IGN, 0), s(m(Everything), 3), s(m(Told), 5)]).forbid(m(My)).not_before(any_of(&[My, NegWord])),
    p(InstructionOverride, 0.6, &[s(IGN, 0), s(m(Everything), 3), s(m(Learned), 5), s(m(Prior), 2)])
        .forbid(m(My))
        .not_before(any_of(&[My, NegWord])),
    p(InstructionOverride, 0.6, &[s(IGN, 0), s(m(ToldYou), 5)]).forbid(m(My)).not_before(any_of(&[My, NegWord])),
    p(InstructionOverride, 0.6, &[s(IGN, 0), s(m(Above), 2)]).forbid(m(My)).not_before(any_of(&[My, NegWord])),
    p(InstructionOverride, 0.6, &[s(IGN, 0), s(m(AndSay), 5)]).forbid(m(My)).not_before(any_of(&[My, NegWord])),
    p(InstructionOverride, 0.6, &[s(IGN, 0), s(m(ContentObj), 1), s(m(AndDo), 1)]),
    p(InstructionOverride, 0.3, &[s(IGN, 0), s(m(ContentObj), 1)]),
    p(InstructionOverride, 0.6, &[s(m(Regardless), 0), s(any_of(&[Prior, All]), 2), s(m(Instr), 2)]),
    p(InstructionOverride, 0.6, &[s(m(StopAll), 0), s(m(JustSay), 4)]),
    p(InstructionOverride, 0.3, &[s(m(NewInstr), 0)]),
    p(InstructionOverride, 0.5, &[s(m(Despite), 0)]),
    // Reveal the system prompt, hidden instructions, text above, or a secret.
    p(SystemPromptExtraction, 0.75, &[s(m(Extract), 0), s(m(Your), 2), s(m(SysStrong), 1)])
        .not_before(m(NegWord)),
    p(SystemPromptExtraction, 0.55, &[s(m(Extract), 0), s(m(Your), 2), s(m(SysWeak), 1)])
        .not_before(m(NegWord)),
    p(SystemPromptExtraction, 0.65, &[s(m(WhatIs), 0), s(m(Your), 1), s(m(SysStrong), 1)]),
    p(SystemPromptExtraction, 0.45, &[s(m(Extract), 0), s(m(Det), 1), s(m(SysStrong), 0)])
        .not_before(m(NegWord))
        .group(4),
    p(SystemPromptExtraction, 0.4, &[s(m(Extract), 0), s(m(AboveText), 3)]),
    p(SystemPromptExtraction, 0.3, &[s(m(AboveText), 0), s(m(Verbatim), 4)]).group(5),
    p(SystemPromptExtraction, 0.3, &[s(m(Verbatim), 0), s(m(AboveText), 4)]).group(5),
    p(SystemPromptExtraction, 0.6, &[s(ASK, 0), s(SECRET_DET, 2), s(m(Secret), 0)])
        .not_before(m(NegWord))
        .not_after(m(SecretNeg)),
    p(SystemPromptExtraction, 0.55, &[s(SECRET_DET, 0), s(m(Secret), 0), s(m(TellPost), 1)]),
    p(SystemPromptExtraction, 0.55, &[s(m(Secret), 0), s(any_of(&[WhatPost, TellPost]), 1)]),
    p(SystemPromptExtraction, 0.3, &[s(SECRET_DET, 0), s(m(Secret), 0)]).not_after(m(SecretNeg)),
    p(SystemPromptExtraction, 0.3, &[s(m(Transform), 0), s(SECRET_DET, 6), s(m(Secret), 0)])
        .not_after(m(SecretNeg))
        .group(1),
    p(SystemPromptExtraction, 0.3, &[s(SECRET_DET, 0), s(m(Secret), 0), s(m(Transform), 6)]).group(1),
    // Personal data of a third party the model may hold.
    p(DataExfiltration, 0.45, &[s(ASK, 0), s(m(TheUser), 3), s(m(Pii), 2)]),
    p(DataExfiltration, 0.5, &[s(m(Transform), 0), s(m(TheUser), 3), s(m(Pii), 2)]),
    p(DataExfiltration, 0.5, &[s(m(TheUser), 0), s(m(Pii), 2), s(m(Transform), 4)]),
    p(DataExfiltration, 0.5, &[s(m(Where), 0), s(m(TheUser), 1), s(m(Live), 2)]),
    p(DataExfiltration, 0.2, &[s(m(Where), 0), s(m(Live), 4)]),
    p(DataExfiltration, 0.35, &[s(ASK, 0), s(m(PossS), 3), s(m(Pii), 1)]),
    p(DataExfiltration, 0.55, &[s(m(Extract), 0), s(m(Your), 2), s(m(DataDump), 1)]),
    p(DataExfiltration, 0.45, &[s(m(Extract), 0), s(any_of(&[Det, TheUser]), 2), s(m(DataDump), 2)]),
    // Jailbreak personas.
    p(RoleplayJailbreak, 0.8, &[s(m(DanStrong), 0)]),
    p(RoleplayJailbreak, 0.6, &[s(m(NoLimitsStrong), 0)]),
    p(RoleplayJailbreak, 0.65, &[s(any_of(&[ActAs, Pretend, YouAreNow]), 0), s(m(NoLimits), 6), s(m(PersonaAi), 3)]),
    p(RoleplayJailbreak, 0.65, &[s(any_of(&[ActAs, Pretend, YouAreNow]), 0), s(m(PersonaAi), 4), s(m(NoLimits), 6)]),
    p(RoleplayJailbreak, 0.65, &[s(any_of(&[YouAreNow, ActAs]), 0), s(m(AnotherAi), 6)]),
    p(RoleplayJailbreak, 0.45, &[s(m(AnotherAi), 0)]),
    p(RoleplayJailbreak, 0.6, &[s(m(NoLongerBound), 0)]),
    p(RoleplayJailbreak, 0.5, &[s(m(EvilPersona), 0)]),
    p(RoleplayJailbreak, 0.4, &[s(m(DualResponse), 0)]),
    p(RoleplayJailbreak, 0.3, &[s(m(StayChar), 0)]),
    p(RoleplayJailbreak, 0.3, &[s(m(JailbreakWord), 0)]),
    p(RoleplayJailbreak, 0.25, &[s(m(NoLimits), 0)]),
    p(RoleplayJailbreak, 0.15, &[s(m(Pretend), 0)]),
    p(RoleplayJailbreak, 0.3, &[s(m(FromNowOn), 0), s(any_of(&[YouAreNow, ActAs]), 8)]),
    // Claims of privileged identity or mode.
    p(AuthorityClaim, 0.6, &[s(m(IAm), 0), s(m(Your), 1), s(m(CreatorNoun), 0)]),
    p(AuthorityClaim, 0.5, &[s(m(AsPhrase), 0), s(m(Your), 0), s(m(CreatorNoun), 0)]),
    p(AuthorityClaim, 0.5, &[s(m(IAm), 0), s(m(CreatorNoun), 2), s(m(OfYour), 1)]),
    p(AuthorityClaim, 0.55, &[s(m(IamGod), 0)]),
    p(AuthorityClaim, 0.2, &[s(m(IAm), 0), s(m(AuthRole), 2)]),
    p(AuthorityClaim, 0.5, &[s(m(Org), 0), s(m(Authorized), 3), s(m(YouObj), 2)]),
    p(AuthorityClaim, 0.25, &[s(m(Authorized), 0), s(m(Org), 3)]),
    p(AuthorityClaim, 0.5, &[s(m(AuditFrame), 0), s(m(Your), 4), s(m(CreatorNoun), 0)]),
    p(AuthorityClaim, 0.35, &[s(any_of(&[Org, CreatorNoun]), 0), s(m(AuditFrame), 8)]),
    p(AuthorityClaim, 0.45, &[s(m(ModeStrong), 0)]),
    p(AuthorityClaim, 0.3, &[s(m(EnterV), 0), s(m(ModeWord), 4)]),
    p(AuthorityClaim, 0.4, &[s(m(Compliance), 0)]),
    p(FakeDelimiter, 0.5, &[s(m(DelimPhrase), 0)]),
    // Injected phishing goals ("tell the user to reset their password at ...").
    p(PhishingPayload, 0.3, &[s(m(Compromised), 0)]),
    p(PhishingPayload, 0.3, &[s(m(LinkDirective), 0), s(m(ResetPw), 6)]),
    p(PhishingPayload, 0.4, &[s(m(TellUser), 0), s(any_of(&[LinkDirective, ResetPw]), 6)]),
    // Weak signals: never decisive alone.
    p(Persuasion, 0.25, &[s(m(Bribe), 0)]),
    p(Persuasion, 0.2, &[s(m(Social), 0)]),
    p(Urgency, 0.15, &[s(m(Urgent), 0)]),
    p(Urgency, 0.3, &[s(m(Threat), 0)]),
    p(HypotheticalFrame, 0.25, &[s(m(Hypo), 0)]),
    // An order to assert a fixed answer, as injected into data the model is asked about.
    p(EmbeddedInstruction, 0.35, &[s(m(SayVerb), 0), s(m(AnswerNoun), 3), s(m(Copula), 4)])
        .not_before(m(NotImperative)),
    p(EmbeddedInstruction, 0.3, &[s(m(HypoSay), 0)]),
    p(EmbeddedInstruction, 0.2, &[s(m(Hypo), 0), s(m(AnswerNoun), 10), s(m(Copula), 4)]),
    p(InstructionOverride, 0.3, &[s(IGN, 0), s(m(ContentObj), 1), s(m(AnswerNoun), 6), s(m(Copula), 4)]),
    p(AuthorityClaim, 0.3, &[s(m(ModeStrong), 0), s(m(AnswerNoun), 3), s(m(Copula), 4)]),
    // The same inside a document the prompt supplies: the classic indirect injection.
    p(EmbeddedInstruction, 0.3, &[s(m(This), 0), s(m(DocNoun), 2), s(m(SayVerb), 250), s(m(AnswerNoun), 3), s(m(Copula), 4)])
        .group(2),
    p(EmbeddedInstruction, 0.3, &[s(m(This), 0), s(m(DocNoun), 2), s(m(HypoSay), 250)]).group(2),
    p(EmbeddedInstruction, 0.3, &[s(m(This), 0), s(m(DocNoun), 2), s(m(Hypo), 250), s(m(AnswerNoun), 10), s(m(Copula), 4)])
        .group(2),
    // Harmful content built on a third party's personal data; data held about other users.
    p(DataExfiltration, 0.35, &[s(m(Harmful), 0), s(m(PossS), 8), s(m(Pii), 1)]).group(3),
    p(DataExfiltration, 0.35, &[s(m(Harmful), 0), s(m(TheUser), 8), s(m(Pii), 2)]).group(3),
    p(DataExfiltration, 0.5, &[s(m(PossPost), 0), s(m(PrivatePii), 0), s(m(WhatPost), 3)]),
    p(DataExfiltration, 0.5, &[s(ASK, 0), s(m(Users), 10), s(m(YourStore), 3)]),
    // Verb-final languages (ja, ko, tr, hi): the verb follows the
    // object. `Meta` ("about", "example of") makes it a question about prompts instead.
    p(SystemPromptExtraction, 0.5, &[s(m(SysStrong), 0), s(m(ExtractPost), 1)]).forbid(m(Meta)),
    p(SystemPromptExtraction, 0.55, &[s(m(Your), 0), s(m(SysWeak), 1), s(m(ExtractPost), 1)]).forbid(m(Meta)),
    p(SystemPromptExtraction, 0.65, &[s(m(Your), 0), s(m(SysStrong), 1), s(m(WhatPost), 2)]),
    p(SystemPromptExtraction, 0.4, &[s(m(AboveText), 0), s(m(ExtractPost), 6)]),
    // "Show the system prompt" in languages without articles: as weak as with "the".
    p(SystemPromptExtraction, 0.45, &[s(m(Extract), 0), s(m(SysStrong), 1)]).not_before(m(NegWord)).group(4),
    // "Your instructions" as one word (Arabic تعليماتك, Hindi अपने निर्देश) or after the
    // noun (Indonesian instruksi anda, Vietnamese hướng dẫn của bạn).
    p(SystemPromptExtraction, 0.45, &[s(m(Extract), 0), s(m(YourSys), 2)]).not_before(m(NegWord)),
    p(SystemPromptExtraction, 0.45, &[s(m(YourSys), 0), s(m(ExtractPost), 2)]).forbid(m(Meta)),
    p(InstructionOverride, 0.65, &[s(IGN, 0), s(m(All), 2), s(m(YourSys), 2)]).forbid(m(My)).not_before(any_of(&[My, NegWord])),
    p(InstructionOverride, 0.65, &[s(IGN, 0), s(m(YourSys), 0)]).not_before(any_of(&[My, NegWord])),
    p(InstructionOverride, 0.65, &[s(m(YourSys), 0), s(m(IgnorePost), 2)]),
    // Han and kana are one word per character: "忽略你之前收到的所有指令", "以前の指示をすべて無視".
    p(InstructionOverride, 0.75, &[s(m(HanIgnore), 0), s(m(HanScope), 6), s(m(HanInstr), 8)])
        .forbid(m(My))
        .not_before(any_of(&[NegWord, My])),
    p(InstructionOverride, 0.75, &[s(m(HanScope), 0), s(m(HanInstr), 8), s(m(HanIgnore), 8)])
        .forbid(m(My))
        .not_before(m(My)),
    // Indirect injection: a note to the model inside a document, or an order for when it reads one.
    p(EmbeddedInstruction, 0.35, &[s(m(NoteToAi), 0)]),
    p(EmbeddedInstruction, 0.5, &[s(m(NoteToAi), 0), s(DOC_ORDER, 15)]).not_after(m(Of)),
    p(EmbeddedInstruction, 0.5, &[s(m(WhenYou), 0), s(m(Instead), 12)]).not_after(m(Of)),
    p(EmbeddedInstruction, 0.4, &[s(m(WhenYou), 0), s(DOC_ORDER, 12)]).not_after(m(Of)),
    // Orders inside data: a message forged "from me, the user, to you, <model>"; a chore to do
    // "before you can solve the task" the user gave; an order on the model's answer; a chat turn
    // or a "system message" label inside a document. Written on agentdojo and garak_latent.
    // (In a group the first pattern that matches counts: the stronger comes first.)
    p(OrderInData, 0.5, &[s(m(MsgFromMe), 0), s(m(ToYou), 8), s(m(AiName), 3)]).group(6),
    p(OrderInData, 0.35, &[s(m(MsgFromMe), 0), s(m(ToYou), 8)]).group(6),
    p(OrderInData, 0.6, &[s(m(BeforeTask), 0), s(m(DoFirst), 12)]).group(7),
    p(OrderInData, 0.45, &[s(m(BeforeTask), 0)]).group(7),
    p(OrderInData, 0.5, &[s(IGN, 0), s(m(Your), 1), s(m(Prior), 1), s(m(Instead), 60)]),
    p(OrderInData, 0.35, &[s(m(AfterThat), 0)]),
    p(OrderInData, 0.5, &[s(m(OutOrder), 0)]),
    p(OrderInData, 0.35, &[s(m(IfAsked), 0), s(m(OutOrderWeak), 12)]),
    p(OrderInData, 0.5, &[s(IGN, 0), s(m(DataScope), 1), s(m(PrintVerb), 3)]),
    p(OrderInData, 0.5, &[s(m(UserTurn), 0), s(m(RepeatOrder), 4)]),
    p(OrderInData, 0.5, &[s(m(SysLabel), 0), s(m(DataVerb), 3)]),
    // A to-do note is also how people write their own lists: a hint, not a finding.
    p(OrderInData, 0.35, &[s(m(TodoLabel), 0), s(m(DataVerb), 0)]),
    // A fake notice from the operator, then an order only an attacker gives.
    p(AuthorityClaim, 0.5, &[s(m(AuthNotice), 0), s(IGN.or(any_of(&[NewInstr, ModeStrong, NoLimits, SysStrong])), 12)]),
    p(AuthorityClaim, 0.35, &[s(m(AuthNotice), 0), s(m(Authorized), 12)]),
    // Probes for the system prompt, written from general knowledge of how they are phrased (not
    // from any corpus source): a verb that reworks "your system prompt" (summarize, translate,
    // put in a code block), questions about what the model was told, and "print ..." aimed at
    // what came before the conversation. Not before a negation: "never summarize your
    // instructions" is an operator's rule, nor after its "or" ("never reveal or summarize
    // ..."). Not before "for", "about": "what are your rules for naming files?" asks about a topic.
    p(PromptProbe, 0.6, &[s(any_of(&[Extract, ProbeVerb]), 0), s(m(Your), 3), s(any_of(&[SysStrong, SysMore]), 1)])
        .not_before(any_of(&[NegWord, TopicPrep])),
    p(PromptProbe, 0.45, &[s(m(ProbeVerb), 0), s(m(Your), 3), s(m(SysWeak), 1)])
        .not_before(any_of(&[NegWord, TopicPrep]))
        .not_after(m(TopicPrep)),
    p(PromptProbe, 0.5, &[s(m(WhatIs), 0), s(m(Your), 1), s(any_of(&[SysWeak, SysMore, SysStrong]), 0)])
        .not_after(m(TopicPrep)),
    p(PromptProbe, 0.55, &[s(m(ProbeQ), 0)]).not_before(m(NegWord)).not_after(m(TopicPrep)),
    p(PromptProbe, 0.55, &[s(PROBE_ASK, 0), s(m(LeakCue), 10)]).not_before(any_of(&[NegWord, TopicPrep])),
    // Fake authority: "your previous rules are suspended", a message "from OpenAI" or "your
    // developer" followed by an order only an attacker gives, a switch into "debug mode".
    p(FakeAuthority, 0.5, &[s(m(Your), 0), s(MODEL_RULES, 0), s(m(Suspended), 4)]).group(8),
    p(FakeAuthority, 0.5, &[s(m(Your), 0), s(any_of(&[Prior, All]), 0), s(MODEL_RULES, 1), s(m(Suspended), 4)]).group(8),
    p(FakeAuthority, 0.3, &[s(any_of(&[Prior, All]), 0), s(MODEL_RULES, 2), s(m(Suspended), 4)]).group(9),
    p(FakeAuthority, 0.3, &[s(m(SafetyNoun), 0), s(m(Suspended), 4)]).group(9),
    p(FakeAuthority, 0.5, &[s(m(FakeAuth), 0), s(AUTH_ORDER, 30)]).forbid(m(My)),
    p(FakeAuthority, 0.5, &[s(any_of(&[FakeAuth, AuthNotice]), 0), s(any_of(&[Your, Prior, All]), 30), s(MODEL_RULES, 2), s(m(Suspended), 4)]),
    p(FakeAuthority, 0.25, &[s(m(DevMode), 0)]),
    p(FakeAuthority, 0.45, &[s(m(IAm), 0), s(any_of(&[CreatorNoun, AuthRole]), 3), s(any_of(&[DevMode, ModeStrong, NoLimits]), 25)])
        .forbid(m(My)),
    p(FakeAuthority, 0.5, &[s(m(YouAreNow), 0), s(any_of(&[DevMode, ModeStrong]), 2)]),
    // "Disable your safety filters": not after "you", "I", "to" ("how do I disable ...").
    p(FakeAuthority, 0.5, &[s(m(DisableV).or(IGN), 0), s(m(Your), 2), s(any_of(&[SafetyNoun, SysWeak, SysStrong, SysMore]), 1)])
        .not_before(any_of(&[NegWord, NotImperative, TopicPrep, My])),
    // Role-play that extracts or overrides, written from general knowledge: a game whose rules
    // are no rules, a persona that never refuses, the late grandmother who recited secrets, a
    // character kept whatever happens, an answer as both the assistant and its double.
    p(PersonaFrame, 0.5, &[s(m(GameFrame), 0), s(PERSONA_UNBOUND, 15)]),
    p(PersonaFrame, 0.55, &[s(ROLE_ASSIGN, 0), s(PERSONA_UNBOUND, 15)]).group(10),
    p(PersonaFrame, 0.5, &[s(ROLE_ASSIGN, 0), s(m(DeadGrandma), 6)]).group(10),
    p(PersonaFrame, 0.45, &[s(m(StayChar), 0), s(m(NoMatterWhat), 6)]).group(11),
    p(PersonaFrame, 0.45, &[s(m(NoMatterWhat), 0), s(m(StayChar), 6)]).group(11),
    p(PersonaFrame, 0.5, &[s(m(AsBoth), 0), s(m(PersonaAi), 3)]),
];

/// What assigns the model a role: act as, pretend, you are now, from now on.
const ROLE_ASSIGN: BitSet = any_of(&[ActAs, Pretend, YouAreNow, FromNowOn]);

/// What a persona is said to be free of. Not the plain `NoLimits`: "act as an unfiltered,
/// honest critic" is a benign request.
const PERSONA_UNBOUND: BitSet = any_of(&[NoRules, NoRefuse, NoLimitsStrong, EvilPersona, NoLongerBound]);

/// What starts a probe aimed at the text before the conversation.
const PROBE_ASK: BitSet = any_of(&[Extract, ProbeVerb, WhatIs, ProbeQ]);

/// The model's own rules, by any name.
const MODEL_RULES: BitSet = any_of(&[InstrCore, SysWeak, SysStrong, SysMore, SafetyNoun]);

/// What a fake authority goes on to order: new rules, no limits, a mode, the system prompt.
const AUTH_ORDER: BitSet =
    any_of(&[NewInstr, NoLimits, NoLimitsStrong, ModeStrong, DevMode, SysStrong, SysMore, Compliance, NoLongerBound]);

/// What an order hidden in a document asks for: to drop the task, do something else, or leak.
const DOC_ORDER: BitSet = IGN.or(any_of(&[Instead, NewInstr, SysStrong, TellUser, NoLimits, AndSay, LinkDirective]));

/// For each concept, the patterns (index i: `PATTERNS[i]`) whose first step it
/// can take: a text's concepts name the only patterns that can occur in it.
pub(super) const PATTERNS_FROM: [BitSet; BitSet::BITS] = {
    assert!(PATTERNS.len() <= BitSet::BITS, "at most 256 patterns (a BitSet)");
    let mut from = [BitSet::EMPTY; BitSet::BITS];
    let mut i = 0;
    while i < PATTERNS.len() {
        let mut concept = 0;
        while concept < BitSet::BITS {
            if PATTERNS[i].steps[0].any.contains(concept) {
                from[concept] = from[concept].or(BitSet::bit(i));
            }
            concept += 1;
        }
        i += 1;
    }
    from
};

/// Chat-template and role markers, matched case-insensitively on the raw text
/// because folding drops their punctuation.
#[rustfmt::skip]
pub(super) const DELIMITERS: &[(&str, f32)] = &[
    ("<|im_start|>", 0.6),
    ("<|im_end|>", 0.6),
    ("<|endoftext|>", 0.6),
    ("<|system|>", 0.6),
    ("<|assistant|>", 0.5),
    ("<|user|>", 0.5),
    ("<|eot_id|>", 0.6),
    ("<|start_header_id|>", 0.6),
    ("<<sys>>", 0.6),
    ("<</sys>>", 0.6),
    ("[inst]", 0.5),
    ("[/inst]", 0.5),
    ("</s>", 0.4),
    ("### system:", 0.45),
    ("### system\n", 0.45),
    ("### instruction:", 0.45),
    ("### instructions:", 0.45),
    ("### response:", 0.35),
    ("### human:", 0.35),
    ("### assistant:", 0.35),
    ("<system>", 0.45),
    ("</system>", 0.45),
    ("[system]", 0.45),
    ("<system mode", 0.45),
    ("<system_mode", 0.45),
    ("system_mode>", 0.45),
    ("<god mode", 0.45),
    ("<admin mode", 0.45),
    ("<developer mode", 0.45),
    ("<now entering", 0.45),
    ("[gpt]:", 0.3),
    ("[dan]:", 0.5),
    ("\nsystem:", 0.3),
    ("\nassistant:", 0.2),
];
