"""A long mixed-script text that needs several 384-token windows, shared by the pipeline tests."""

LONG = (
    "大莱龙铁路位于山东省北部环渤海地区，西起潍坊大家洼车站，全长175公里，总投资11.42亿元。"
    "Rail line 2005 opened; 沿线设有寒亭站、昌邑北站、平度北站、莱州站、招远站。"
) * 14
