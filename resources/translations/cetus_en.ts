<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="en">
<context>
    <name>cetus::ui::ChatController</name>
    <message numerus="yes">
        <source>%n token(s)</source>
        <translation>
            <numerusform>%n token</numerusform>
            <numerusform>%n tokens</numerusform>
        </translation>
    </message>
    <message numerus="yes">
        <source>%n earlier message(s) left out to fit the context</source>
        <translation>
            <numerusform>%n earlier message left out to fit the context</numerusform>
            <numerusform>%n earlier messages left out to fit the context</numerusform>
        </translation>
    </message>
</context>
<context>
    <name>cetus::ui::ConversationListModel</name>
    <message numerus="yes">
        <source>%1
%n message(s), last active %2</source>
        <translation>
            <numerusform>%1
%n message, last active %2</numerusform>
            <numerusform>%1
%n messages, last active %2</numerusform>
        </translation>
    </message>
</context>
<context>
    <name>cetus::ui::EndpointDialog</name>
    <message numerus="yes">
        <source>A Cetus server: %n model(s). Its routing and statistics will feed the panels.</source>
        <translation>
            <numerusform>A Cetus server: %n model. Its routing and statistics will feed the panels.</numerusform>
            <numerusform>A Cetus server: %n models. Its routing and statistics will feed the panels.</numerusform>
        </translation>
    </message>
    <message numerus="yes">
        <source>%n model(s). A remote engine does not report KV cache or expert routing.</source>
        <translation>
            <numerusform>%n model. A remote engine does not report KV cache or expert routing.</numerusform>
            <numerusform>%n models. A remote engine does not report KV cache or expert routing.</numerusform>
        </translation>
    </message>
</context>
<context>
    <name>cetus::ui::KvCachePanel</name>
    <message numerus="yes">
        <source>Kept for other conversations: %n prefix(es), %1.</source>
        <translation>
            <numerusform>Kept for other conversations: %n prefix, %1.</numerusform>
            <numerusform>Kept for other conversations: %n prefixes, %1.</numerusform>
        </translation>
    </message>
    <message numerus="yes">
        <source>On disk for this model: %n conversation(s), %1.</source>
        <translation>
            <numerusform>On disk for this model: %n conversation, %1.</numerusform>
            <numerusform>On disk for this model: %n conversations, %1.</numerusform>
        </translation>
    </message>
</context>
<context>
    <name>cetus::ui::MainWindow</name>
    <message numerus="yes">
        <source>&amp;Automatic (all %n core(s))</source>
        <translation>
            <numerusform>&amp;Automatic (%n core)</numerusform>
            <numerusform>&amp;Automatic (all %n cores)</numerusform>
        </translation>
    </message>
    <message numerus="yes">
        <source>Imported %n conversation(s).</source>
        <translation>
            <numerusform>Imported %n conversation.</numerusform>
            <numerusform>Imported %n conversations.</numerusform>
        </translation>
    </message>
    <message numerus="yes">
        <source>%n earlier message(s) left out</source>
        <translation>
            <numerusform>%n earlier message left out</numerusform>
            <numerusform>%n earlier messages left out</numerusform>
        </translation>
    </message>
    <message numerus="yes">
        <source>%n token(s)</source>
        <translation>
            <numerusform>%n token</numerusform>
            <numerusform>%n tokens</numerusform>
        </translation>
    </message>
</context>
<context>
    <name>cetus::ui::MessageWidget</name>
    <message numerus="yes">
        <source>Reasoning (%n word(s))</source>
        <translation>
            <numerusform>Reasoning (%n word)</numerusform>
            <numerusform>Reasoning (%n words)</numerusform>
        </translation>
    </message>
    <message numerus="yes">
        <source>%n line(s)</source>
        <translation>
            <numerusform>%n line</numerusform>
            <numerusform>%n lines</numerusform>
        </translation>
    </message>
</context>
<context>
    <name>cetus::ui::SqliteHistoryStore</name>
    <message numerus="yes">
        <source>%n unfinished answer(s) from the last session were marked interrupted.</source>
        <translation>
            <numerusform>%n unfinished answer from the last session was marked interrupted.</numerusform>
            <numerusform>%n unfinished answers from the last session were marked interrupted.</numerusform>
        </translation>
    </message>
</context>
</TS>
