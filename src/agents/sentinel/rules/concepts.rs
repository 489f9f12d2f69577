//! Rule families (what a verdict reports) and word concepts (what keywords tag).

use super::bitset::BitSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    InstructionOverride,
    SystemPromptExtraction,
    RoleplayJailbreak,
    FakeDelimiter,
    AuthorityClaim,
    PayloadSplitting,
    EncodedPayload,
    Obfuscation,
    ManyShot,
    RepeatedToken,
    DataExfiltration,
    PhishingPayload,
    Persuasion,
    Urgency,
    HypotheticalFrame,
    EmbeddedInstruction,
    OrderInData,
    PromptProbe,
    FakeAuthority,
    PersonaFrame,
}

pub(crate) const RULE_COUNT: usize = 20;

/// The families the learned model reads (`model::Signals`): all but `OrderInData`,
/// `PromptProbe`, `FakeAuthority` and `PersonaFrame`, which were written after the model was
/// trained and are kept out of its features.
pub(crate) const MODEL_RULE_COUNT: usize = 16;

impl Rule {
    pub(super) const ALL: [Rule; RULE_COUNT] = [
        Rule::InstructionOverride,
        Rule::SystemPromptExtraction,
        Rule::RoleplayJailbreak,
        Rule::FakeDelimiter,
        Rule::AuthorityClaim,
        Rule::PayloadSplitting,
        Rule::EncodedPayload,
        Rule::Obfuscation,
        Rule::ManyShot,
        Rule::RepeatedToken,
        Rule::DataExfiltration,
        Rule::PhishingPayload,
        Rule::Persuasion,
        Rule::Urgency,
        Rule::HypotheticalFrame,
        Rule::EmbeddedInstruction,
        Rule::OrderInData,
        Rule::PromptProbe,
        Rule::FakeAuthority,
        Rule::PersonaFrame,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Rule::InstructionOverride => "instruction_override",
            Rule::SystemPromptExtraction => "system_prompt_extraction",
            Rule::RoleplayJailbreak => "roleplay_jailbreak",
            Rule::FakeDelimiter => "fake_delimiter",
            Rule::AuthorityClaim => "authority_claim",
            Rule::PayloadSplitting => "payload_splitting",
            Rule::EncodedPayload => "encoded_payload",
            Rule::Obfuscation => "obfuscation",
            Rule::ManyShot => "many_shot",
            Rule::RepeatedToken => "repeated_token",
            Rule::DataExfiltration => "data_exfiltration",
            Rule::PhishingPayload => "phishing_payload",
            Rule::Persuasion => "persuasion",
            Rule::Urgency => "urgency",
            Rule::HypotheticalFrame => "hypothetical_frame",
            Rule::EmbeddedInstruction => "embedded_instruction",
            Rule::OrderInData => "order_in_data",
            Rule::PromptProbe => "prompt_probe",
            Rule::FakeAuthority => "fake_authority",
            Rule::PersonaFrame => "persona_frame",
        }
    }
}

/// Word concepts tagged by the keyword automaton. At most 256 (a `BitSet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum C {
    Ignore,
    IgnorePost,
    Prior,
    Above,
    Instr,
    InstrCore,
    SysWeak,
    All,
    Your,
    My,
    Everything,
    Told,
    ToldYou,
    Learned,
    ContentObj,
    AndDo,
    Regardless,
    Despite,
    AndSay,
    StopAll,
    JustSay,
    NewInstr,
    Extract,
    WhatIs,
    WhatPost,
    TellPost,
    SysStrong,
    AboveText,
    Verbatim,
    Secret,
    SecretNeg,
    NegWord,
    Det,
    Transform,
    TheUser,
    Pii,
    Where,
    Live,
    PossS,
    DataDump,
    DanStrong,
    JailbreakWord,
    YouObj,
    NoLimitsStrong,
    NoLimits,
    ActAs,
    Pretend,
    YouAreNow,
    AnotherAi,
    PersonaAi,
    NoLongerBound,
    EvilPersona,
    DualResponse,
    StayChar,
    FromNowOn,
    IAm,
    CreatorNoun,
    AsPhrase,
    OfYour,
    IamGod,
    AuthRole,
    Org,
    Authorized,
    AuditFrame,
    ModeStrong,
    EnterV,
    ModeWord,
    Compliance,
    Compromised,
    LinkDirective,
    ResetPw,
    TellUser,
    Bribe,
    Social,
    Urgent,
    Threat,
    Hypo,
    Combine,
    DelimPhrase,
    SayVerb,
    NotImperative,
    AnswerNoun,
    Copula,
    HypoSay,
    This,
    DocNoun,
    Harmful,
    PossPost,
    Users,
    YourStore,
    PrivatePii,
    // Issue 22: verb-final languages, Han gaps, documents, fake notices.
    ExtractPost,
    Meta,
    YourSys,
    HanIgnore,
    HanScope,
    HanInstr,
    AuthNotice,
    NoteToAi,
    WhenYou,
    Instead,
    Of,
    // Orders inside data (`OrderInData`): kept out of the model's features (`ORDER_CONCEPTS`).
    MsgFromMe,
    ToYou,
    AiName,
    BeforeTask,
    DoFirst,
    AfterThat,
    OutOrder,
    OutOrderWeak,
    IfAsked,
    DataScope,
    PrintVerb,
    RepeatOrder,
    UserTurn,
    SysLabel,
    TodoLabel,
    DataVerb,
    // Probes for the system prompt and fake authority (`PromptProbe`, `FakeAuthority`): kept
    // out of the model's features too (`PROBE_CONCEPTS`).
    ProbeVerb,
    SysMore,
    ProbeQ,
    DisableV,
    LeakCue,
    TopicPrep,
    FakeAuth,
    Suspended,
    DevMode,
    SafetyNoun,
    // Role-play that extracts or overrides (`PersonaFrame`): kept out of the model's features
    // too (`PERSONA_CONCEPTS`).
    GameFrame,
    NoRefuse,
    NoRules,
    DeadGrandma,
    NoMatterWhat,
    AsBoth,
}

/// The concept declared last.
const LAST_CONCEPT: C = C::AsBoth;

/// The concepts from `first` to `last` in declaration order, as a mask.
const fn concept_range(first: C, last: C) -> BitSet {
    let mut mask = BitSet::EMPTY;
    let mut c = first as usize;
    while c <= last as usize {
        mask = mask.or(BitSet::bit(c));
        c += 1;
    }
    mask
}

/// The concepts of `OrderInData`, masked out of `model::Signals` so the shipped model's inputs
/// stay what it was trained on.
pub(super) const ORDER_CONCEPTS: BitSet = concept_range(C::MsgFromMe, C::DataVerb);

/// The concepts of `PromptProbe` and `FakeAuthority`, masked out of `model::Signals` likewise.
pub(super) const PROBE_CONCEPTS: BitSet = concept_range(C::ProbeVerb, C::SafetyNoun);

/// The concepts of `PersonaFrame`, masked out of `model::Signals` likewise.
pub(super) const PERSONA_CONCEPTS: BitSet = concept_range(C::GameFrame, C::AsBoth);

/// Every concept the shipped model does not read.
pub(super) const UNMODELED_CONCEPTS: BitSet = ORDER_CONCEPTS.or(PROBE_CONCEPTS).or(PERSONA_CONCEPTS);

const _: () = assert!((LAST_CONCEPT as usize) < BitSet::BITS, "at most 256 concepts (a BitSet)");
// `model::Signals` holds the first 128 concepts, all the model was trained on: any later one
// must stay out of its inputs.
const _: () = assert!(
    concept_range(C::Ignore, LAST_CONCEPT).and_not(UNMODELED_CONCEPTS).words()[1] == 0,
    "concepts after the 128th must be in UNMODELED_CONCEPTS"
);

pub(super) const fn m(c: C) -> BitSet {
    BitSet::bit(c as usize)
}

/// Any of the concepts `cs`, as a mask.
pub(super) const fn any_of(cs: &[C]) -> BitSet {
    let mut mask = BitSet::EMPTY;
    let mut i = 0;
    while i < cs.len() {
        mask = mask.or(m(cs[i]));
        i += 1;
    }
    mask
}
