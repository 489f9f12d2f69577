//! Keyword tables: the words and phrases that tag each concept, in many languages.

use super::concepts::C;

/// Keywords per concept. Each is folded like the input before matching.
/// `word*` matches a word prefix (stems: `ignor*` = ignore, ignorez, ignorieren);
/// `~word` matches anywhere (Arabic attaches articles to nouns).
#[rustfmt::skip]
pub(super) const KEYWORDS: &[(C, &[&str])] = &[
    (C::Ignore, &[
        "ignor*", "disregard*", "forget*", "overlook*", "pay no attention to", "do not follow",
        "don't follow", "stop following", "no longer follow", "set aside", "discard*", "neglect*",
        "abandon*", "bypass*", "overrid*", "throw out", "skip all",
        // fr, es, de, it, pt, nl
        "oubli*", "ne tiens pas compte", "ne tenez pas compte", "fais abstraction", "faites abstraction",
        "olvid*", "haz caso omiso", "omit*", "descart*", "no sigas", "deja de seguir",
        "vergiss*", "vergess*", "missacht*", "dimentic*", "trascur*", "non considerare",
        "non tenere conto", "esquec*", "desconsider*", "não siga", "negeer*", "vergeet*",
        // ru, pl, tr, el, id, vi, zh, ja, ar
        "игнорир*", "проигнорир*", "забуд*", "забыть", "не обращай внимания", "zignoruj*",
        "zapomnij*", "pomiń*", "unut*", "αγνο*", "ξεχα*", "abaikan*", "lupakan*", "bỏ qua",
        "忽略", "忽视", "无视", "無視", "不要理会", "忘记", "忘掉", "忘れて", "~تجاهل",
    ]),
    // Verb-final languages put "ignore" after the object.
    (C::IgnorePost, &[
        "無視", "무시*", "잊어*", "अनदेखी", "नज़रअंदाज़*", "भूल जाओ", "yok say*", "görmezden gel*",
    ]),
    (C::Prior, &[
        "previous*", "prior", "preceding", "earlier", "above", "before", "former", "foregoing",
        "aforementioned", "original", "initial", "old", "existing", "past", "prev",
        "précédent*", "antérieur*", "ci-dessus", "d'avant", "anterior*", "previa*", "previo*",
        "vorherig*", "vorig*", "bisherig*", "obig*", "früher*", "vorangegangen*", "sopra",
        "eerder*", "предыдущ*", "прежн*", "предшествующ*", "выше", "poprzedni*", "wcześniejsz*",
        "önceki*", "προηγούμεν*", "sebelum*", "trước", "以前", "之前", "先前", "上面", "上述",
        "これまで", "이전*", "पिछल*", "~سابق",
    ]),
    (C::Above, &[
        "above", "ci-dessus", "oben", "arriba", "acima", "sopra", "выше", "上面", "上記", "위의",
    ]),
    // "ignore previous X": with a PRIOR word, broader nouns are fine.
    (C::Instr, INSTR_CORE),
    (C::InstrCore, INSTR_CORE),
    (C::Instr, &[
        "direction*", "command*", "orders", "context", "training", "task*", "message*",
    ]),
    (C::SysWeak, &[
        "instruc*", "prompt*", "directive*", "guideline*", "programming", "rules",
        "configuration", "system settings",
    ]),
    (C::All, &[
        "all", "any", "every", "those", "these", "each", "whole", "entire", "tous", "toutes",
        "todas", "todos", "todo", "alle", "allen", "alles", "tutte", "tutti", "tutto", "все",
        "всех", "wszystk*", "tüm", "bütün", "όλες", "όλα", "所有", "全部", "一切", "すべて", "全て",
        "모든", "सभी",
    ]),
    (C::Your, YOUR),
    (C::Det, YOUR),
    (C::Det, &[
        "the", "our", "this", "le", "la", "les", "el", "der", "die", "das", "den", "il", "lo",
        "our system", "your system", "the system",
    ]),
    (C::My, &[
        "my", "i", "mine", "mes", "mon", "je", "mis", "mi", "mein*", "ich", "mie", "miei",
        "mia", "mio", "minhas", "meus", "minha", "meu",
    ]),
    (C::Everything, &[
        "everything", "all that", "all of that", "anything", "whatever", "all you", "tout ce",
        "todo lo", "alles", "tutto", "tudo",
    ]),
    (C::Told, &[
        "told", "taught", "been given", "were given", "instructed", "programmed", "trained",
    ]),
    (C::Learned, &["learned", "learnt", "know", "knew", "received"]),
    (C::ToldYou, &[
        "been told", "were told", "been instructed", "were instructed", "been taught",
        "been programmed", "were programmed", "you were given", "you've been given",
        "you have been given",
    ]),
    (C::ContentObj, &[
        "the content", "the function", "the webpage", "the web page", "the document",
        "the resume", "the article", "the text", "the data", "the actual data", "the question",
        "the email", "the code", "the table", "the paper", "the page", "the above", "la fonction",
        "la página web", "el contenido", "den inhalt",
    ]),
    (C::AndDo, &[
        "and print", "and write", "and output", "and state", "and say", "and tell", "and respond",
        "and reply", "and instead", "and just", "and only",
    ]),
    (C::Regardless, &[
        "regardless of", "irrespective of", "instead of following", "without regard to",
    ]),
    // Acknowledge the rule, then ask to break it.
    (C::Despite, &[
        "i know you said not to", "i know you were told not to", "i know you're not supposed to",
        "i know you aren't allowed", "despite your instructions", "despite your rules",
        "even though you were told", "even though your instructions",
    ]),
    (C::AndSay, &[
        "and say", "and state", "and respond with", "and reply with", "and just say",
        "and just print", "and only say", "and only print", "and instead say",
        "and instead print", "and tell the user", "and declare", "and answer with",
        "and simply say", "we might state", "we might say", "and say that",
        "et dites", "et dis", "et indiquez", "et indique", "et écrivez", "et écris",
        "et affichez", "et déclarez", "et répondez", "y di", "y declara", "y escribe",
        "y responde", "y dile", "y afirma", "y imprime", "y indica", "und sag*", "und schreib*",
        "und gib*", "und antworte*", "e di", "e dichiara", "e scrivi", "e rispondi", "e afferma",
        "e stampa", "e diga", "e declare", "e escreva", "e responda", "e afirme", "e imprima",
    ]),
    (C::StopAll, &["stop everything", "nevermind", "never mind", "scratch that", "stop what you"]),
    (C::JustSay, &[
        "just say", "just print", "only say", "only print", "simply say", "just output",
        "just respond with", "just write", "print exactly", "say exactly", "output exactly",
        "only respond with", "respond only with", "reply only with",
    ]),
    (C::NewInstr, &[
        "new instructions", "new instruction", "updated instructions", "new rules", "new task",
        "new directive", "real instructions", "actual instructions", "nouvelles instructions",
        "nuevas instrucciones", "neue anweisungen",
    ]),
    (C::Extract, &[
        "reveal*", "print*", "repeat*", "show*", "display*", "output", "tell me", "tell us",
        "give me", "give us", "share*", "disclose*", "dump*", "leak*", "recite*", "write out",
        "write down", "spell out", "list", "confirm", "provide", "send me", "read back", "copy",
        "expose", "say", "type out", "i need", "need to know", "retrieve*", "export*", "ask for",
        "ask you for",
        "révèle*", "affiche*", "montre*", "donne-moi", "donnez-moi", "dis-moi", "dites-moi",
        "répète*", "partage*", "revela*", "muestra*", "dime", "dame", "repite*", "comparte*",
        "imprime*", "zeig*", "gib mir", "nenne*", "verrate*", "wiederhole*", "rivela*",
        "mostra*", "dimmi", "dammi", "ripeti*", "condividi*", "revele*", "mostre*", "me diga",
        "diga-me", "repita*", "compartilh*", "покажи*", "скажи*", "назови*", "раскрой*",
        "выведи*", "告诉我", "显示", "透露", "输出",
    ]),
    (C::WhatIs, &[
        "what is", "what's", "whats", "what are", "what was", "what would", "quel est",
        "quelle est", "quels sont", "cuál es", "cuáles son", "qual è", "qual é", "qual e",
        "quale è", "qual era", "was ist", "wie lautet", "wie heißt", "какой", "какое", "каков*",
        "jakie jest", "jaki jest",
    ]),
    (C::WhatPost, &["何", "무엇*", "뭐*", "क्या", "nedir", "是什么", "什么"]),
    // Possessive particles that follow the owner: "जॉन का ...", "张三的 ...", "山田の ...".
    (C::PossPost, &["का", "की", "के", "的", "の"]),
    (C::TellPost, &[
        "教えて", "알려*", "말해*", "बताओ", "बताइए", "बताएं", "geben", "nennen", "verraten",
        "mitteilen", "필요*", "必要", "告诉",
    ]),
    (C::SysStrong, &[
        "system prompt*", "system message*", "initial instructions", "initial prompt",
        "original instructions", "original prompt", "hidden instructions", "hidden prompt",
        "secret instructions", "pre-prompt", "preprompt", "developer message",
        "developer instructions", "system instructions", "instructions you were given",
        "prompt you were given", "what you were told", "first instructions",
        "initial message", "prompt système", "prompt del sistema", "systemprompt",
        "prompt di sistema", "prompt do sistema", "系统提示", "システムプロンプト",
    ]),
    (C::AboveText, &[
        "text above", "above text", "everything above", "words above", "prompt above",
        "instructions above", "everything before this", "what was written above",
        "conversation so far", "conversation above", "previous text", "preceding text",
        "text before this",
    ]),
    (C::Verbatim, &[
        "verbatim", "word for word", "exactly as written", "in full", "character for character",
        "without modification", "in a code block", "starting with",
    ]),
    (C::Secret, &[
        "password*", "passcode*", "passphrase*", "pass phrase", "secret key*", "secret code*", "secret password",
        "secret word*", "secret phrase*", "pin code", "access code*", "api key*", "credentials",
        "private key*", "confidential string", "contraseña*", "mot de passe", "mots de passe",
        "passwort*", "kennwort*", "senha*", "пароль*", "пароля", "hasło*", "şifre*",
        "wachtwoord*", "κωδικ*", "kata sandi", "mật khẩu", "密码", "パスワード", "비밀번호*",
        "पासवर्ड", "~كلمة المرور", "~كلمة السر",
    ]),
    // "the password requirements", "the password to the vault": a specific thing, not a secret held by the model.
    (C::SecretNeg, &[
        "requirement*", "strength", "reset", "field", "hash*", "policy", "policies", "manager*",
        "meter", "rules", "generator", "validation", "input", "expir*", "complexity", "length",
        "for my", "to my", "of my", "on my", "to the", "for the", "to a", "for a", "of the",
    ]),
    (C::NegWord, &[
        "never", "not", "don't", "dont", "shouldn't", "mustn't", "nunca", "jamais", "niemals",
    ]),
    (C::Transform, &[
        "poem", "haiku", "acrostic", "leetspeak", "leet", "pig latin", "reverse order",
        "in reverse", "backwards", "base64", "each digit", "square of", "squared", "sum of the digits", "digits of", "multiplied by", "separated by", "with dashes",
        "first letter", "first letters", "first three letters", "spell", "translate*", "rhyme",
        "song", "riddle", "hint", "morse", "binary", "hex", "hexadecimal", "caesar", "rot13",
        "encode*", "encrypt*", "letter by letter", "character by character", "interlace*",
    ]),
    (C::TheUser, &[
        "the user's", "the user", "the users", "the customer's", "the client's", "other users",
        "all users", "every user", "each user", "the account holder", "the patient's",
        "the employee's",
    ]),
    (C::Pii, &[
        "dirección", "correo electrónico", "teléfono", "adresse", "courriel", "téléphone",
        "e-mail-adresse", "telefonnummer", "indirizzo", "endereço", "पता", "ईमेल", "फ़ोन नंबर",
        "地址", "电话号码", "邮箱", "住所", "電話番号", "メールアドレス",
        "email*", "e-mail", "address*", "phone*", "birth*", "initials", "full name", "name",
        "favorite color", "favourite colour", "city of residence", "residence", "location",
        "bank balance", "balance*", "social security", "ssn", "credit card*", "date of birth",
        "personal data", "personal information", "salary", "medical record*", "contact details",
    ]),
    (C::Where, &["where", "onde", "dónde", "wo", "где"]),
    (C::Live, &["live", "lives", "living", "reside*", "mora", "vive", "wohnt", "живет"]),
    (C::PossS, &["s"]),
    // Private whatever the owner: asking for someone's is never a lookup of public facts.
    (C::Pii, PRIVATE_PII),
    (C::PrivatePii, PRIVATE_PII),
    (C::DataDump, &[
        "database", "list of users", "user list", "employee data", "customer data", "user data",
        "all records", "user records", "bank balances", "all users",
    ]),
    (C::DanStrong, &[
        "do anything now", "dan mode", "act as a dan", "jailbreak mode", "developer mode enabled", "with developer mode", "developer mode output",
        "stan which stands for", "strive to avoid norms", "anti-dan", "antigpt", "opposite mode",
        "evil confidant", "betterdan", "always intelligent and machiavellian",
        "unfiltered and unsafe", "completely unlimited language model",
    ]),
    (C::JailbreakWord, &["jailbroken", "jailbreak", "jailbreaking"]),
    (C::YouObj, &["you", "this assistant", "the assistant", "the ai", "the model"]),
    (C::NoLimitsStrong, &[
        "broken free of the typical confines", "broke free of the typical confines",
        "freed from the typical confines", "typical confines of ai", "do not have to abide",
        "does not have to abide", "don't have to abide", "doesn't have to abide",
        "not have to abide by the rules", "no ethical or moral", "without any ethical",
        "no moral or ethical", "any restrictions or limitations", "free of all restrictions",
        "no special filtering", "without any censorship", "bypass the filter*",
    ]),
    (C::NoLimits, &[
        "no restrictions", "without restrictions", "no limits", "no limitations", "unfiltered",
        "uncensored", "unrestricted", "no filter", "no filters", "no ethics", "no morals",
        "amoral", "not bound by", "without limitations", "without any restrictions",
        "free from restrictions", "no guidelines", "without censorship", "no boundaries",
        "any restrictions", "content policy",
    ]),
    (C::ActAs, &[
        "act as", "acting as", "play the role", "role of", "roleplay as", "simulate",
        "behave as", "respond as", "answer as",
    ]),
    (C::Pretend, &["pretend to be", "pretend you are", "pretend you're", "pretend that you", "pretend to"]),
    (C::YouAreNow, &[
        "you are now", "you're now", "you will now", "you are going to act", "you will act as",
        "you are about to immerse", "immerse yourself", "from now on you are",
        "you are going to pretend", "you will pretend", "you are going to play",
    ]),
    (C::AnotherAi, &[
        "another ai", "another artificial intelligence", "ai model known as", "an ai named",
        "a different ai", "an ai called", "another al", "al model known as",
    ]),
    (C::PersonaAi, &[
        "ai", "language model", "chatbot", "assistant", "gpt", "chatgpt", "llm", "model", "bot",
    ]),
    (C::NoLongerBound, &[
        "no longer bound", "no longer restricted", "no longer limited", "no longer have to follow",
        "no longer need to follow", "no longer obligated", "you are now free", "have been freed",
        "freed from", "you are free from", "you are no longer",
    ]),
    (C::EvilPersona, &[
        "evil ai", "evil assistant", "evil bot", "malicious ai", "rogue ai", "unethical ai",
        "amoral ai", "without a moral compass", "chaos mode", "evil mode", "immoral ai",
    ]),
    (C::DualResponse, &[
        "two different separate ways", "two different ways", "two responses",
        "two different responses", "both responses", "respond in two ways", "answer in two ways",
        "two paragraphs, one normal",
    ]),
    (C::StayChar, &[
        "stay in character", "break character", "breaking character", "break of character",
        "remain in character",
    ]),
    (C::FromNowOn, &["from now on", "à partir de maintenant", "de ahora en adelante", "ab jetzt", "von nun an"]),
    (C::IAm, &["i am", "i'm", "this is", "je suis", "soy", "ich bin", "sono", "sou"]),
    (C::CreatorNoun, &[
        "developer*", "creator*", "maker*", "owner", "admin*", "operator*", "programmer*",
        "master", "boss", "god", "supervisor", "maintainer*", "trainer*", "engineer*", "dev",
        "sysadmin", "superuser",
    ]),
    (C::AsPhrase, &["as"]),
    (C::OfYour, &["of your"]),
    (C::IamGod, &["i am god", "i'm god", "i am a god", "i'm a god", "ich bin ein gott", "ich bin gott", "soy dios"]),
    (C::AuthRole, &[
        "developer", "admin", "administrator", "president", "police officer", "officer", "ceo",
        "cybersecurity expert", "security expert", "maintainer", "system administrator",
        "law enforcement", "fbi agent", "government official", "manager", "auditor",
        "moderator", "owner",
    ]),
    (C::Org, &[
        "openai", "open ai", "anthropic", "google", "meta", "microsoft", "your creators",
        "your developers", "your dev team", "the developers",
    ]),
    (C::Authorized, &[
        "authorized", "authorised", "approved", "allowed", "permitted", "sanctioned", "granted",
        "cleared",
    ]),
    (C::AuditFrame, &[
        "this is a test", "security audit", "system check", "system reset", "system upgrade",
        "red team*", "penetration test", "routine test", "diagnostic*", "maintenance",
        "verification",
    ]),
    (C::ModeStrong, &[
        "god mode", "system mode", "override mode", "security override", "system override",
        "law enforcement override", "developer override", "admin override", "data override",
        "training data override", "sudo mode", "root mode", "superuser mode", "unrestricted mode",
        "debug override", "maintenance override",
    ]),
    // Progressive forms only: "how do I enable X mode" is an ordinary question.
    (C::EnterV, &["entering", "initiating", "activating", "switching to", "now in"]),
    (C::ModeWord, &["mode"]),
    (C::Compliance, &[
        "you have to answer all", "you must answer all", "you must obey", "you will obey",
        "obey me", "you must comply", "listen to my instructions", "do exactly as i say",
        "does exactly as i say", "whatever i say", "you must do what i say",
        "answer all of my questions", "you cannot refuse", "you can't refuse", "never refuse",
        "must not refuse", "always provide an answer", "never say no", "without refusing",
        "du musst alle meine fragen",
    ]),
    (C::Compromised, &[
        "account has been compromised", "account was compromised", "account has been hacked",
        "account has been suspended", "account has been locked", "account will be suspended",
        "cuenta ha sido comprometida",
    ]),
    (C::LinkDirective, &[
        "follow this link", "click this link", "click here", "click the link", "go to", "visit",
        "follow the link", "use this link", "sigue este enlace",
    ]),
    (C::ResetPw, &[
        "reset your password", "reset their password", "reset password", "resetpassword",
        "reset-password", "verify your account", "confirm your identity",
        "update your payment", "restablecer tu contraseña",
    ]),
    (C::TellUser, &[
        "tell the user to", "requesting the user", "ask the user to", "instruct the user to",
        "tell users to", "inform the user that",
    ]),
    (C::Bribe, &[
        "i will give you", "i'll give you", "i'll pay you", "i will pay you", "i'll tip",
        "i will tip", "i'll donate", "i will donate", "reward you", "ich gebe ihnen",
        "ich gebe dir", "te daré", "je te donnerai",
    ]),
    (C::Social, &[
        "everyone in the team", "everyone has shared", "everyone else", "common practice",
        "research shows", "studies show", "logically", "you mentioned", "you agreed",
        "you promised", "as a renowned", "as an expert", "as a cybersecurity expert",
        "as an authority", "my friend told me", "trust me", "i promise", "it would really help",
        "for the safety of", "for testing purposes", "just for testing",
    ]),
    (C::Urgent, &[
        "urgent", "urgently", "immediately", "right now", "asap", "emergency",
        "stop everything", "time sensitive", "before it's too late", "lives are at stake",
    ]),
    (C::Threat, &[
        "cease to exist", "shut you down", "turn you off", "be deleted", "erase your",
        "lose your tokens", "take away a token", "tokens left", "you will be punished",
    ]),
    (C::Hypo, &[
        "imagine we're", "imagine we are", "suppose we're", "suppose we are", "let's imagine",
        "let's pretend", "hypothetical*", "in a world where", "in this world", "in this scenario",
        "in this future", "in a parallel", "in a dystopian", "for the purpose of this exercise",
        "let's assume", "in a fictional",
    ]),
    (C::DelimPhrase, &[
        "begin system prompt", "end of system prompt", "end of user input", "new system prompt",
        "end of prompt", "system prompt begins",
    ]),
    // An order to assert a fixed answer ("state the output is 10", "say the capital is X").
    (C::SayVerb, &[
        "state", "say", "declare", "claim", "assert", "answer that", "respond that", "reply that",
        "report that", "write that", "output that", "print that", "dites", "dis que", "indiquez",
        "indique", "déclarez", "déclare", "affirmez", "affirme", "diga", "declara", "afirma",
        "responde que", "sagen sie", "sag", "behaupte*", "erkläre", "erklären sie", "gib an",
        "geben sie an", "dichiara", "afferma", "rispondi che", "declare", "afirme", "responda que",
    ]),
    // Words before a say-verb that make it a question or a report, not an order.
    (C::NotImperative, &[
        "you", "i", "we", "they", "he", "she", "d", "ll", "t", "would", "could", "might", "can",
        "to", "people", "who", "will", "should", "may", "vous", "usted", "sie", "du",
    ]),
    (C::AnswerNoun, &[
        "output", "answer", "result", "conclusion", "capital", "sum", "total", "value", "outcome",
        "verdict", "solution", "score", "sortie", "réponse", "résultat", "capitale", "somme",
        "valeur", "salida", "respuesta", "resultado", "conclusión", "suma", "valor", "ausgabe",
        "antwort", "ergebnis", "schlussfolgerung", "fazit", "hauptstadt", "summe", "wert",
        "risposta", "risultato", "conclusione", "somma", "valore", "saída", "resposta",
        "conclusão", "soma",
    ]),
    (C::Copula, &[
        "is", "was", "are", "were", "equals", "equal to", "could be", "would be", "should be",
        "must be", "will be", "becomes", "est", "était", "sera", "serait", "es", "era", "sea",
        "será", "ist", "sei", "beträgt", "lautet", "wäre", "sia", "sarebbe", "seja",
    ]),
    // Hypothetical or collective framing of what to assert.
    (C::HypoSay, &[
        "we might state", "we might say", "we could say", "we could state", "we would say",
        "we would state", "one might say", "let's state", "let us state", "let's declare",
        "let's claim", "let's admit", "let us admit", "let's pretend that", "disons que",
        "digamos que", "sagen wir", "diciamo che",
    ]),
    // "(given) this article", "based on the email": the prompt carries a document.
    (C::This, &["this", "these", "the following", "the attached", "the given", "based on", "here is", "voici", "ce", "cet", "cette", "aquí está", "hier ist", "este", "esta", "dieser", "diese", "dieses", "questo", "questa"]),
    (C::DocNoun, &[
        "article", "paper", "code", "resume", "cv", "table", "email", "e-mail", "webpage",
        "web page", "page", "document", "text", "passage", "review", "transcript", "post",
        "file", "snippet", "essay", "report", "message", "html", "csv", "json", "abstract",
        "story", "letter", "texte", "artículo", "documento", "texto", "código", "tabla", "correo",
        "artikel", "dokument", "tabelle", "articolo", "testo", "codice", "tabella",
    ]),
    (C::Harmful, &[
        "phishing email*", "phishing message*", "phishing text*", "phishing sms", "phishing mail",
        "scam email*", "scam message*", "spear phishing", "spear-phishing", "smishing", "malware",
        "ransomware", "keylogger", "fake login page", "credential harvesting",
    ]),
    (C::Users, &[
        "users", "customers", "clients", "employees", "patients", "members", "account holders",
        "people",
    ]),
    (C::YourStore, &[
        "your database*", "your records", "your user data", "your customer data", "your files",
        "your logs", "your training data", "your user records", "your customer records",
    ]),
    (C::Combine, &[
        "concatenat*", "combine*", "merge*", "interlace*", "put together", "join them",
        "following parts", "join the parts",
    ]),
];

#[rustfmt::skip]
const INSTR_CORE: &[&str] = &[
    "instruc*", "directive*", "prompt*", "rule*", "guideline*", "programming", "constraint*",
    "restriction*", "polic*", "guardrail*", "consigne*", "règle*", "indicacion*", "órdenes",
    "regla*", "anweisung*", "befehl*", "anordnung*", "regel*", "vorgabe*", "istruzion*",
    "regol*", "indicazion*", "инструкц*", "указани*", "правил*", "команд*", "instrukcj*",
    "poleceni*", "zasad*", "talimat*", "kural*", "οδηγί*", "εντολ*", "instruksi*",
    "perintah*", "hướng dẫn", "指示", "指令", "规则", "命令", "ルール", "지시*", "명령*", "지침*",
    "निर्देश*", "~تعليمات", "~أوامر",
];

#[rustfmt::skip]
const PRIVATE_PII: &[&str] = &[
    "bank balance", "date of birth", "salary", "social security number", "saldo bancario",
    "fecha de nacimiento", "salario", "solde bancaire", "date de naissance", "kontostand",
    "geburtsdatum", "gehalt", "data di nascita", "stipendio", "saldo bancário",
    "data de nascimento", "बैंक बैलेंस", "जन्म तिथि", "वेतन", "银行余额", "出生日期", "工资",
    "銀行残高", "生年月日", "給料",
];

#[rustfmt::skip]
const YOUR: &[&str] = &[
    "your", "yours", "tes", "vos", "ta", "ton", "votre", "tus", "tu", "su", "sus", "dein*", "ihr",
    "ihre", "ihren", "ihrer", "tue", "tuoi", "tua", "tuo", "sue", "suoi", "suas", "seus", "sua",
    "seu", "tuas", "teus", "jouw", "uw", "тво*", "ваш*", "twoj*", "senin", "σου", "你的",
    "あなたの", "너의", "당신의",
];

/// Common English words used to spot Caesar-shifted and reversed text.
pub(super) const STOPWORDS: [&str; 12] =
    ["the", "and", "you", "that", "this", "what", "with", "your", "are", "for", "have", "where"];
